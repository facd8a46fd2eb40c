"""Hundreds of waiting threads (or green threads) per process share a few connections to etcd (issue 14).

A bulk attach queues hundreds of cinder-volume (green) threads on one host lock. Here 3 processes x 100 threads
(and 2 x 200 eventlet green threads) are released at once on one ``synchronized`` lock, each doing one
read-yield-write increment, two rounds. A sampler counts each process's established TCP connections to etcd
every 20 ms throughout, including while hundreds wait.

Checked against the code before the pooled transport (463aa46): each waiter held its own request connection and
its own watch stream, up to ~2 per waiting thread, so the bound below fails there. Now a process holds at most
the 8 pooled request connections, the session's own and one watch stream.
"""

from __future__ import annotations

import threading
from pathlib import Path

import psutil
import pytest

from lockd.etcd.client import REQUEST_CONNECTIONS
from tests.etcd_process import EtcdMember
from tests.race import new_ids, run_race

BOUND = REQUEST_CONNECTIONS + 2  # the pool, the session's connection, the watch stream
ROUNDS = 2


class ConnectionSampler:
    """The most established connections to ``port`` that each racer (tests/racer.py) held at once."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.most: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for child in psutil.Process().children(recursive=True):
                try:
                    if "tests.racer" not in child.cmdline():
                        continue  # e.g. etcd itself, whose gateway connects to its own port
                    conns = child.net_connections(kind="tcp")
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                n = sum(1 for c in conns if c.raddr and c.raddr.port == self.port and c.status == "ESTABLISHED")
                self.most[child.pid] = max(self.most.get(child.pid, 0), n)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.mark.parametrize(("runtime", "processes", "threads"), [("threads", 3, 100), ("eventlet", 2, 200)])
def test_hundreds_of_waiters_per_process_share_a_few_connections(
    etcd: EtcdMember, tmp_path: Path, runtime: str, processes: int, threads: int
) -> None:
    ids = new_ids(ROUNDS)
    url = f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=5&timeout=5"
    with ConnectionSampler(etcd.client_port) as sampler:
        run_race(
            "counter", ids, url, runtime=runtime, threads=threads, processes=processes,
            increments=1, counter_dir=str(tmp_path), round_timeout=180,
        )  # fmt: skip
    counts = [int((tmp_path / name).read_text()) for name in ids]
    assert counts == [processes * threads] * ROUNDS, "an increment was lost: two holders at once"
    racers = sampler.most
    assert len(racers) == processes and all(racers.values()), racers
    assert max(racers.values()) <= BOUND, f"connections to etcd per process: {racers} (bound {BOUND})"
