"""What following the locks costs `lockd serve`: its CPU and RSS while clients acquire ~200 locks a second (issue 26).

Floor (issue 26): ``lockd serve`` uses at most 5 % of one core at 200 acquisitions/s with the hold history and the
contention profile on (their defaults). The RSS printed is the sidecar's at the end of a run; the other floor, 300 MB
with 100,000 holds of history, is tests/unit/test_history.py's.

Setup, all on loopback: a private etcd (lockd.embedded, or --backend-url), `lockd serve` as a subprocess (so its
CPU is its own in /proc/<pid>/stat: utime + stime), and a load generator in this process: ``--threads`` threads
sharing one tooz coordinator on ``lockd+etcd3+http://`` (as one cinder-volume process would), each in a paced
loop of acquire, hold ``--hold-ms``, release, on one of ``--names`` lock names, so some acquisitions queue and
are granted (the sidecar then follows queue entries, grants and waits, not only free takes). The sidecar's CPU is
read over ``--seconds`` after ``--warmup`` seconds of load; the acquisitions counted over the same window are
reported beside it, so a run that missed the target rate shows it, and so is the CPU per acquisition (less
sensitive to a rate the machine could not hold).

To compare source trees, give ``--tree`` more than once: each round runs `lockd serve` from each tree in turn
(``PYTHONPATH=<tree>``, cwd the tree), on the same etcd, with the same load generator (this script's tree), so
before/after pairs alternate and a neighbour's load on the machine falls on both. ``--rounds`` pairs; the
summary gives each tree's range.

    .venv/bin/python bench/serve_cpu.py [--tree /path/a --tree /path/b] [--rounds 3] [--rate 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from api_load import free_port, start_sidecar, wait_until  # noqa: E402

from lockd.bench.etcd import LocalEtcd, cpu_seconds  # noqa: E402

FLOOR_CPU_PCT = 5.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


class Load:
    """``threads`` paced acquire/hold/release loops on ``names`` names through one tooz coordinator."""

    def __init__(self, backend_url: str, rate: float, threads: int, names: int, hold: float) -> None:
        from tooz import coordination

        self.coordinator = coordination.get_coordinator(backend_url, f"bench-serve-cpu-{os.getpid()}".encode())
        self.coordinator.start(start_heart=True)
        self.period = threads / rate  # each thread's share of the target rate
        self.names = [f"bench-serve-cpu-{i}" for i in range(names)]
        self.hold = hold
        self.count = 0
        self._count_mutex = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _loop(self, index: int) -> None:
        locks = {name: self.coordinator.get_lock(name) for name in self.names}
        due = time.monotonic() + self.period * index / len(self._threads)  # spread the threads over one period
        turn = index
        while not self._stop.is_set():
            pause = due - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                return
            due = max(due + self.period, time.monotonic() - self.period)  # no burst to catch up a long wait
            lock = locks[self.names[turn % len(self.names)]]
            turn += 1
            if lock.acquire(blocking=True):
                time.sleep(self.hold)
                lock.release()
                with self._count_mutex:
                    self.count += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self.coordinator.stop()


def one_run(tree: Path, backend_url: str, load: Load, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One `lockd serve` from ``tree`` under the running load: its CPU, RSS and the acquisitions in the window."""
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="serve-", dir=work))
    with open(state / "serve.log", "wb") as log:
        sidecar = start_sidecar(backend_url, port, state, log, tree=tree)  # history and profile at their defaults
        try:
            wait_until(lambda: ready(port), 60, f"lockd serve from {tree}")
            time.sleep(args.warmup)
            count0, cpu0, t0 = load.count, cpu_seconds(sidecar.pid), time.monotonic()
            time.sleep(args.seconds)
            count1, cpu1, t1 = load.count, cpu_seconds(sidecar.pid), time.monotonic()
            rss = rss_mb(sidecar.pid)
            if sidecar.poll() is not None or cpu0 is None or cpu1 is None:
                raise SystemExit(f"lockd serve from {tree} exited {sidecar.returncode}: see {state / 'serve.log'}")
        finally:
            sidecar.terminate()
            try:
                sidecar.wait(30)
            except subprocess.TimeoutExpired:
                sidecar.kill()
                sidecar.wait()
    elapsed = t1 - t0
    return {
        "tree": str(tree),
        "acq_per_s": (count1 - count0) / elapsed,
        "cpu_pct": (cpu1 - cpu0) / elapsed * 100,
        "cpu_us_per_acq": (cpu1 - cpu0) / max(1, count1 - count0) * 1e6,
        "rss_mb": rss,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path, help="source tree to run lockd serve from (repeatable)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tree, alternating (default 3)")
    parser.add_argument("--rate", type=float, default=200.0, help="target acquisitions/s (default 200)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--names", type=int, default=4, help="lock names they share (default 4)")
    parser.add_argument("--hold-ms", type=float, default=1.0, help="hold time, ms (default 1)")
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU measurement window (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring (default 3)")
    parser.add_argument("--backend-url", help="an etcd to use (default: a private embedded one)")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in (args.tree or [REPO])]
    for tree in trees:
        if not (tree / "lockd" / "api" / "view.py").exists():
            parser.error(f"{tree} is not a lockd source tree")

    work = Path(tempfile.mkdtemp(prefix="lockd-serve-cpu-"))
    embedded = None if args.backend_url else LocalEtcd()
    backend_url = embedded.start() if embedded is not None else args.backend_url
    runs: list[dict[str, Any]] = []
    load = None
    try:
        load = Load(backend_url, args.rate, args.threads, args.names, args.hold_ms / 1000)
        load.start()
        for round_no in range(args.rounds):
            for tree in trees:
                run = one_run(tree, backend_url, load, work, args)
                run["round"] = round_no + 1
                runs.append(run)
                if not args.json:
                    print(
                        f"round {round_no + 1}  {tree}: {run['acq_per_s']:6.1f} acq/s  "
                        f"CPU {run['cpu_pct']:5.2f}% of a core ({run['cpu_us_per_acq']:4.0f} us/acq)  "
                        f"RSS {run['rss_mb']:5.1f} MB",
                        flush=True,
                    )
    finally:
        if load is not None:
            load.stop()
        if embedded is not None:
            embedded.stop()
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    print(
        f"\nlockd serve at a target of {args.rate:g} acq/s ({args.threads} threads, {args.names} names, "
        f"{args.hold_ms:g} ms holds), {args.seconds:g} s windows, {os.cpu_count()} cores; floor {FLOOR_CPU_PCT:g}%"
    )
    for tree in trees:
        mine = [run for run in runs if run["tree"] == str(tree)]
        cpu = sorted(run["cpu_pct"] for run in mine)
        rate = sorted(run["acq_per_s"] for run in mine)
        per = sorted(run["cpu_us_per_acq"] for run in mine)
        print(
            f"  {tree}: CPU {cpu[0]:.2f}-{cpu[-1]:.2f}% (median {cpu[len(cpu) // 2]:.2f}), "
            f"{per[0]:.0f}-{per[-1]:.0f} us/acq, {rate[0]:.0f}-{rate[-1]:.0f} acq/s, "
            f"RSS {max(run['rss_mb'] for run in mine):.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
