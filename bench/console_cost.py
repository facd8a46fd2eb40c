"""What an open console page costs `lockd serve` with 10,000 locks held (not a test; figures for docs/operations.md).

Setup, all on loopback: a private etcd (lockd.embedded), `lockd serve` as a subprocess (its CPU is its own in
/proc/<pid>/stat), 10,000 locks held through the lockd protocol by one session (bench/api_load.py's Holder).
Then, each for ``--seconds``, the sidecar's CPU while:

  idle           nobody looks;
  page /         Debian's headless chromium shows the overview (it refreshes its live part every 0.8 s);
  page prefix    the same page filtered to one lock's prefix;
  poll /v1/locks what a page polling the full JSON listing at the same rate would cost (the road not taken).

and the size and latency of one live refresh of the overview, measured from here.

    .venv/bin/python bench/console_cost.py [--locks 10000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_load import Holder, cpu_percent_during, free_port, start_sidecar, wait_until  # noqa: E402

from lockd.console.pages import POLL_SECONDS  # noqa: E402
from lockd.embedded import EmbeddedEtcd  # noqa: E402
from tests.browser.conftest import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS  # noqa: E402


def open_page(url: str, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.get(url)
    wait_until(lambda: "Live: updated" in driver.find_element("css selector", ".refresh").text, 30, "the page")
    return driver


def poll_json(url: str, stop: threading.Event) -> None:
    with httpx.Client(timeout=30) as http:
        while not stop.wait(POLL_SECONDS):
            http.get(url + "/v1/locks").raise_for_status()


def refresh_latency(url: str, rounds: int = 30) -> tuple[float, float, int]:
    """(p50 ms, p90 ms, bytes) of the overview's live refresh as the page's script asks for it."""
    times, size = [], 0
    with httpx.Client(timeout=30) as http:
        for _ in range(rounds):
            sent = time.perf_counter()
            answer = http.get(url + "/", headers={"X-Lockd-Live": "1"})
            times.append((time.perf_counter() - sent) * 1000)
            size = len(answer.content)
            answer.raise_for_status()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)], size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--locks", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each CPU measurement")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lockd-console-cost-"))
    embedded = EmbeddedEtcd(work / "etcd-state")
    backend_url = embedded.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(work / "serve.log", "wb")
    sidecar = start_sidecar(backend_url, port, work / "serve", log)
    holder = driver = None
    rows: list[tuple[str, str]] = []
    try:
        wait_until(lambda: _ready(url), 60, "lockd serve")
        holder = Holder(backend_url)
        holder.hold(args.locks)
        wait_until(lambda: f'data-total="{args.locks}"' in _live(url), 120, f"{args.locks} locks on the page")
        time.sleep(2.0)

        rows.append(("idle, no page", f"{cpu_percent_during(sidecar.pid, args.seconds):.2f}% of a core"))
        driver = open_page(url + "/", work / "profile")
        rows.append(("one page on / (100 of the locks shown)", f"{cpu_percent_during(sidecar.pid, args.seconds):.2f}%"))
        driver.get(url + "/?prefix=bench-lock-000042")
        rows.append(("one page, prefix matching 1 lock", f"{cpu_percent_during(sidecar.pid, args.seconds):.2f}%"))
        driver.quit()
        driver = None

        stop = threading.Event()
        poller = threading.Thread(target=poll_json, args=(url, stop))
        poller.start()
        try:
            rows.append(("polling GET /v1/locks instead", f"{cpu_percent_during(sidecar.pid, args.seconds):.2f}%"))
        finally:
            stop.set()
            poller.join()
        p50, p90, size = refresh_latency(url)
        rows.append(("live refresh of / (one answer)", f"p50 {p50:.1f} ms, p90 {p90:.1f} ms, {size / 1000:.0f} kB"))
        json_size = len(httpx.get(url + "/v1/locks", timeout=30).content)
        rows.append(("GET /v1/locks (one answer)", f"{json_size / 1e6:.1f} MB"))
    finally:
        if driver is not None:
            driver.quit()
        if holder is not None:
            holder.close()
        sidecar.terminate()
        sidecar.wait(30)
        log.close()
        embedded.stop()
    print(f"lockd serve with {args.locks} locks held, {os.cpu_count()} cores, refresh every {POLL_SECONDS:g} s")
    for label, value in rows:
        print(f"  {label:42s} {value}")
    return 0


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _live(url: str) -> str:
    try:
        return httpx.get(url + "/", headers={"X-Lockd-Live": "1"}, timeout=30).text
    except httpx.HTTPError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
