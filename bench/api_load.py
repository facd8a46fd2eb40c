"""Load benchmark of the `lockd serve` admin API (not a test): throughput, listing latency, idle CPU.

Floors (issue 5): ``GET /v1/locks/{name}`` >= 1,500 req/s with 1,000 locks held; ``GET /v1/locks`` p50 <= 300 ms
with 10,000 locks held; the sidecar idles below 2% of one core with 1,000 locks held.

Setup, all on loopback: a private etcd (lockd.embedded, or --backend-url), `lockd serve` as a subprocess (so its
CPU is its own in /proc/<pid>/stat), and locks really held through the lockd protocol (one session, as one
cinder-volume process would hold them). The load generator is a few threads of keep-alive ``http.client``
connections in this process; ``/healthz`` (constant JSON, no lock state) is measured the same way as the
framework's ceiling on this machine, and the lock lookup is reported as a ratio of it.

    .venv/bin/python bench/api_load.py [--duration 5] [--threads 6] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lockd.bench.etcd import cpu_seconds  # noqa: E402
from lockd.embedded import EmbeddedEtcd  # noqa: E402
from lockd.etcd.client import EtcdClient  # noqa: E402
from lockd.lock import Mutex  # noqa: E402
from lockd.options import parse_backend_url  # noqa: E402
from lockd.session import Session  # noqa: E402

FLOOR_LOOKUP_RPS = 1500.0
FLOOR_LIST_P50_MS = 300.0
FLOOR_IDLE_CPU_PCT = 2.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Holder:
    """Locks held by one lockd session (one process's worth), released all at once by revoking its lease."""

    def __init__(self, backend_url: str) -> None:
        self.client = EtcdClient(parse_backend_url(backend_url))
        self.session = Session(self.client, 10.0, f"bench-holder-{os.getpid()}")
        self.names: list[str] = []

    def hold(self, count: int, workers: int = 4) -> None:
        start = len(self.names)
        names = [f"bench-lock-{i:06d}" for i in range(start, start + count)]

        def take(name: str) -> None:
            if not Mutex(name, lambda _deadline: self.session, self.session.member).acquire(blocking=False):
                raise RuntimeError(f"could not take {name}")

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(take, names))
        self.names.extend(names)

    def close(self) -> None:
        self.session.close()
        self.client.close()


def start_sidecar(
    backend_url: str, port: int, state_dir: Path, log: IO[bytes], tree: Path | None = None
) -> subprocess.Popen[bytes]:
    """`lockd serve` as a subprocess on ``port``, its output in ``log`` (its CPU is then its own); from the source
    tree ``tree`` (its own PYTHONPATH and cwd) when given, else from this environment's lockd."""
    return subprocess.Popen(
        [sys.executable, "-m", "lockd.cli.main", "serve", "--backend-url", backend_url, "--port", str(port)]
        + ["--log-level", "warning", "--state-dir", str(state_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tree,
        env=dict(os.environ, PYTHONPATH=str(tree)) if tree is not None else None,
    )


def get_json(port: int, path: str) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        conn.close()


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def listed(port: int, count: int) -> bool:
    try:
        status, body = get_json(port, "/v1/locks?prefix=bench-lock-")
    except OSError:
        return False
    return status == 200 and isinstance(body, dict) and len(body["locks"]) == count


def load(port: int, paths: list[str], duration: float, threads: int) -> dict[str, float]:
    """Closed-loop load: ``threads`` keep-alive connections, each sending the next request when answered."""
    stop = time.monotonic() + duration
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads

    def worker(index: int) -> None:
        rng = random.Random(index)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = latencies[index]
        while time.monotonic() < stop:
            path = paths[rng.randrange(len(paths))]
            sent = time.perf_counter()
            conn.request("GET", path)
            answer = conn.getresponse()
            answer.read()
            mine.append(time.perf_counter() - sent)
            if answer.status != 200:
                errors[index] += 1
        conn.close()

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - started
    every = sorted(x for per in latencies for x in per)
    return {
        "requests": len(every),
        "errors": sum(errors),
        "rps": len(every) / elapsed,
        "p50_ms": every[len(every) // 2] * 1000,
        "p99_ms": every[int(len(every) * 0.99)] * 1000,
    }


def cpu_percent_during(pid: int, seconds: float) -> float:
    """The share of one core the process ``pid`` uses over the next ``seconds`` (it sleeps that long)."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    after = cpu_seconds(pid)
    if before is None or after is None:
        raise SystemExit(f"process {pid} is gone: its CPU time cannot be read")
    return (after - before) / seconds * 100


def list_latency(port: int, rounds: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    size = 0
    for _ in range(rounds):
        sent = time.perf_counter()
        conn.request("GET", "/v1/locks")
        answer = conn.getresponse()
        body = answer.read()
        times.append((time.perf_counter() - sent) * 1000)
        size = len(body)
        assert answer.status == 200, answer.status
    conn.close()
    times.sort()
    return {"p50_ms": statistics.median(times), "p90_ms": times[int(len(times) * 0.9)], "bytes": size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend-url", help="an etcd to use (default: a private embedded one)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    parser.add_argument("--threads", type=int, default=6, help="load generator connections")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--list-rounds", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="lockd-api-bench-"))
    embedded = None
    backend_url = args.backend_url
    if backend_url is None:
        embedded = EmbeddedEtcd(state / "state")
        backend_url = embedded.start()
    port = free_port()
    log = open(state / "serve.log", "wb")
    sidecar = start_sidecar(backend_url, port, state / "serve", log)
    holder = None
    results: dict[str, object] = {"cores": os.cpu_count()}
    try:
        wait_until(lambda: listed(port, 0), 60, "lockd serve to start")
        holder = Holder(backend_url)
        holder.hold(1000)
        wait_until(lambda: listed(port, 1000), 60, "1,000 locks to be listed")

        time.sleep(1.0)  # let the sidecar settle after the burst of watch events
        results["idle_cpu_pct_1000_locks"] = cpu_percent_during(sidecar.pid, args.idle_seconds)

        lookup_paths = ["/v1/locks/" + urllib.parse.quote(n, safe="") for n in holder.names]
        load(port, lookup_paths, 1.0, args.threads)  # warm-up
        results["lookup_1000_locks"] = load(port, lookup_paths, args.duration, args.threads)
        results["healthz_baseline"] = load(port, ["/healthz"], args.duration, args.threads)

        holder.hold(9000)
        wait_until(lambda: listed(port, 10000), 120, "10,000 locks to be listed")
        results["list_10000_locks"] = list_latency(port, args.list_rounds)
    finally:
        if holder is not None:
            holder.close()
        sidecar.terminate()
        sidecar.wait(30)
        log.close()
        if embedded is not None:
            embedded.stop()

    lookup = results["lookup_1000_locks"]
    base = results["healthz_baseline"]
    listing = results["list_10000_locks"]
    idle = results["idle_cpu_pct_1000_locks"]
    assert isinstance(lookup, dict) and isinstance(base, dict) and isinstance(listing, dict)
    assert isinstance(idle, float)
    checks = [
        ("GET /v1/locks/{name}, 1,000 held", f"{lookup['rps']:.0f} req/s", f">= {FLOOR_LOOKUP_RPS:.0f}",
         lookup["rps"] >= FLOOR_LOOKUP_RPS and lookup["errors"] == 0),
        ("GET /v1/locks p50, 10,000 held", f"{listing['p50_ms']:.0f} ms", f"<= {FLOOR_LIST_P50_MS:.0f} ms",
         listing["p50_ms"] <= FLOOR_LIST_P50_MS),
        ("sidecar idle CPU, 1,000 held", f"{idle:.2f}% of a core", f"< {FLOOR_IDLE_CPU_PCT:.0f}%",
         idle < FLOOR_IDLE_CPU_PCT),
    ]  # fmt: skip
    results["floors_met"] = all(ok for *_, ok in checks)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for label, value, floor, ok in checks:
            print(f"{label:36s} {value:>18s}  floor {floor:10s} {'PASS' if ok else 'FAIL'}")
        print(
            f"lookup p50 {lookup['p50_ms']:.1f} ms p99 {lookup['p99_ms']:.1f} ms over {lookup['requests']} requests, "
            f"{args.threads} connections; /healthz baseline {base['rps']:.0f} req/s "
            f"(lookup = {lookup['rps'] / base['rps']:.2f}x of the framework ceiling)"
        )
        print(f"list p90 {listing['p90_ms']:.0f} ms, answer {listing['bytes'] / 1e6:.1f} MB; {os.cpu_count()} cores")
    return 0 if results["floors_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
