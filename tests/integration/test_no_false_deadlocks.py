"""No false deadlock under contention: `lockd serve`'s wait-for graph (lockd.api.waits) watched through two
contention runs on a real etcd, sampled all along: waits are seen, no deadlock is ever reported.

- Eight processes x two threads on one name (the bench's contention shape): a holder is never its own waiter,
  not even while its release grants the lock to the next in line and it queues again at once.
- Four processes x four threads on two names, in one order (even threads A then B, odd threads B alone): nobody
  can deadlock, but a process often holds A in one thread while another of its threads holds B, and waits for
  each. A graph of processes sees cycles there all the time (check: make ``Owner.of`` drop the thread, and
  this test fails); a graph of threads sees none.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lockd.config import Settings
from tests.etcd_process import EtcdMember
from tests.integration.api_server import ApiServer
from tests.procs import ChildProcess

TOKEN = "no-false-deadlock-token"


@pytest.fixture(scope="module")
def server(etcd: EtcdMember) -> Iterator[ApiServer]:
    settings = Settings(backend_url=f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=5", admin_token=TOKEN)
    with ApiServer(settings) as srv:
        yield srv


class Sampler:
    """Polls /v1/waits and /v1/deadlocks until stopped: the most edges seen at once, every deadlock id seen."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.most_edges = 0
        self.samples = 0
        self.deadlocks: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _get(self, path: str) -> dict[str, Any]:
        answer = httpx.get(self.server.url + path, timeout=5)
        answer.raise_for_status()
        return answer.json()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.most_edges = max(self.most_edges, len(self._get("/v1/waits")["edges"]))
            for found in self._get("/v1/deadlocks")["deadlocks"]:
                self.deadlocks[found["id"]] = found
            self.samples += 1

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def churn(
    etcd_url: str, workers: list[ChildProcess], processes: int, threads: int, first: str, second: str | None
) -> int:
    """Run ``processes`` churn children (tests/deadlock_child.py), started together; the lock cycles they made."""
    spec = {"mode": "churn", "first": first, "second": second, "threads": threads, "seconds": 4}
    children = [ChildProcess("-m", "tests.deadlock_child", etcd_url, json.dumps(spec)) for _ in range(processes)]
    workers += children
    for c in children:
        c.wait_event("ready")
    for c in children:
        c.send("go")
    return sum(c.wait_event("done", timeout=60)["cycles"] for c in children)


@pytest.mark.parametrize(
    ("processes", "threads", "two_names"),
    [(8, 2, False), (4, 4, True)],
    ids=["8x2-one-name", "4x4-two-names-one-order"],
)
def test_contention_reports_no_deadlock(
    server: ApiServer, etcd_url: str, workers: list[ChildProcess], processes: int, threads: int, two_names: bool
) -> None:
    tag = uuid.uuid4().hex[:8]
    first, second = f"nfd-{tag}-a", (f"nfd-{tag}-b" if two_names else None)
    with Sampler(server) as sampler:
        cycles = churn(etcd_url, workers, processes, threads, first, second)
        time.sleep(1.0)  # one more detection interval (0.5 s) after the last release
    resolved = httpx.get(server.url + "/v1/deadlocks", timeout=5).json()["resolved"]
    print(f"\n{cycles} lock cycles, {sampler.samples} samples, up to {sampler.most_edges} wait edges at once")
    assert cycles > 100
    assert sampler.most_edges >= processes, "the graph never showed the waits: the check would see nothing"
    assert not sampler.deadlocks, f"deadlocks reported: {list(sampler.deadlocks.values())}"
    assert not resolved, f"deadlocks reported and resolved meanwhile: {resolved}"
