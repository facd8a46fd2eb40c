"""Makes docs/console.png and docs/console-lock.png: the web console of a real `lockd serve` in Debian's
headless chromium, 1280 px wide (the overview, and one lock's page with its queue).

The scene is staged on a private etcd with real lockd holders: two cinder-volume-like members holding volume
locks, two waiters queued behind one of them, a stock tooz holder, a volume whose status moved under a fenced
lock, and one force-break in the audit trail.

    .venv/bin/python scripts/console_screenshot.py [DIR (default docs)]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import tooz.coordination

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lockd.embedded import EmbeddedEtcd  # noqa: E402
from lockd.status import open_store  # noqa: E402
from tests.browser.conftest import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS  # noqa: E402
from tests.etcd_process import free_port  # noqa: E402
from tests.procs import wait_for  # noqa: E402


def coordinator(url: str, member: str) -> tooz.coordination.CoordinationDriver:
    coord = tooz.coordination.get_coordinator(url, member.encode())
    coord.start(start_heart=True)
    return coord


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs"
    work = Path(tempfile.mkdtemp(prefix="lockd-screenshot-"))
    etcd = EmbeddedEtcd(work / "etcd")
    etcd_url = etcd.start()
    address = etcd_url.split("://", 1)[1].split("?", 1)[0]
    url = f"lockd+etcd3+http://{address}?lease_ttl=30"
    port = free_port()
    token = uuid.uuid4().hex
    env = {**os.environ, "LOCKD_ADMIN_TOKEN": token}
    with open(work / "serve.log", "wb") as log:
        sidecar = subprocess.Popen(
            [sys.executable, "-m", "lockd.cli.main", "serve", "--backend-url", url, "--port", str(port)]
            + ["--state-dir", str(work / "serve")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    coords = []
    driver = None
    try:
        wait_for(lambda: _ready(base), 60, "lockd serve")
        node1 = coordinator(url, "cinder-volume@node1")
        node2 = coordinator(url, "cinder-volume@node2")
        node3 = coordinator(url, "cinder-volume@node3")
        coords += [node1, node2, node3]
        volumes = [str(uuid.uuid4()) for _ in range(4)]
        busy = node1.get_lock(f"cinder-{volumes[0]}-delete_volume".encode())
        assert busy.acquire()
        time.sleep(1.5)
        assert node2.get_lock(f"cinder-{volumes[1]}-extend_volume".encode()).acquire()
        for waiter in (node2, node3):  # queued behind node1's delete
            threading.Thread(
                target=waiter.get_lock(f"cinder-{volumes[0]}-delete_volume".encode()).acquire, daemon=True
            ).start()
            time.sleep(0.3)
        stock = tooz.coordination.get_coordinator(f"etcd3+http://{address}?lock_timeout=30", b"old-node")
        stock.start()
        coords.append(stock)
        assert stock.get_lock(b"cinder-backup-export-2").acquire()
        assert node1.get_lock(f"cinder-{volumes[2]}-create_snapshot".encode()).acquire()
        stuck = node3.get_lock(f"cinder-{volumes[3]}-detach_volume".encode())
        assert stuck.acquire()
        store = open_store(url)
        store.compare_and_set("volume", volumes[0], [None], "available")
        store.compare_and_set("volume", volumes[0], ["available", "error"], "deleting", fence=busy)
        store.close()
        answer = httpx.delete(
            f"{base}/v1/locks/cinder-{volumes[3]}-detach_volume", headers={"Authorization": f"Bearer {token}"}
        )
        answer.raise_for_status()

        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag.replace("1280,900", "1280,1180"))
        options.add_argument(f"--user-data-dir={work / 'profile'}")
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Europe/Berlin"})
        driver.get(base + "/")
        wait_for(lambda: "Live: updated" in driver.find_element("css selector", ".refresh").text, 10, "the page")
        time.sleep(2.0)
        driver.save_screenshot(str(out / "console.png"))
        driver.set_window_size(1280, 760)
        driver.get(f"{base}/ui/locks/cinder-{volumes[0]}-delete_volume")
        wait_for(lambda: "Live: updated" in driver.find_element("css selector", ".refresh").text, 10, "the page")
        time.sleep(1.0)
        driver.save_screenshot(str(out / "console-lock.png"))
        print(f"wrote {out / 'console.png'} and {out / 'console-lock.png'}")
    finally:
        if driver is not None:
            driver.quit()
        for coord in coords:
            try:
                coord.stop()
            except Exception:  # a lock the break took from it: stopping still ends its session
                pass
        sidecar.terminate()
        sidecar.wait(30)
        etcd.stop()
    return 0


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
