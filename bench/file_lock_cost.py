"""What oslo's lock file costs to take and let go, through fasteners and through drivers_shim.file_lock.

Both take the same ``fcntl.lockf`` lock on the same file; the difference is what fasteners builds per call
(a text file object, a stopwatch, a retry helper). Uncontended, in one process, interleaved in batches so the
machine's drift falls on both alike. No etcd involved: the local cost of the patched lock's file half.

    .venv/bin/python bench/file_lock_cost.py [--cycles 20000] [--batch 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import fasteners

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from drivers_shim import file_lock  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20000, help="timed acquire+release cycles per variant")
    parser.add_argument("--batch", type=int, default=500, help="cycles per turn of a variant")
    args = parser.parse_args()
    path = os.path.join(tempfile.mkdtemp(prefix="file-lock-cost-"), "cinder-bench")
    raw = os.fsencode(path)

    def with_fasteners() -> None:
        lock = fasteners.InterProcessLock(path)
        lock.acquire()
        lock.release()

    def with_file_lock() -> None:
        fd = file_lock.lock(raw, True, 0.01, 0.1, None)
        assert fd is not None
        file_lock.unlock(fd)

    variants: dict[str, Callable[[], None]] = {"fasteners": with_fasteners, "drivers_shim.file_lock": with_file_lock}
    times: dict[str, list[int]] = {name: [] for name in variants}
    for call in variants.values():  # warm up
        for _ in range(args.batch):
            call()
    while min(len(t) for t in times.values()) < args.cycles:
        for name, call in variants.items():
            for _ in range(args.batch):
                start = time.perf_counter_ns()
                call()
                times[name].append(time.perf_counter_ns() - start)
    for name, values in times.items():
        values.sort()
        p50, p99 = values[len(values) // 2] / 1000, values[int(len(values) * 0.99)] / 1000
        print(f"{name:24} p50 {p50:7.1f} us  p99 {p99:7.1f} us  mean {statistics.mean(values) / 1000:7.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
