"""Holds that end while `lockd serve`'s watch is cut off from etcd are still in its history, marked ``unobserved``.

The sidecar reaches etcd through a TCP proxy (tests.faults.lossy_proxy), the gate; the holder, a coordinator
of this process, talks to etcd directly. Three locks are held and seen in /v1/locks. The gate is cut: every
connection through it reset and new ones refused, so the view's watch ends and its full reads fail (the API
answers 503). Meanwhile one lock is released, one released and taken again (another token), one kept. The gate
opens, the view reads etcd again, and /v1/history must have the two holds that ended in the gap as
``unobserved``, with ``ended_between`` around the moments they really ended and no length held; the kept lock
has no record and is still held.

What makes it fail: without the comparison of the old copy with the full read (lockd.api.view._install), the
two holds vanish from the view without a record (the history of the released lock stays empty).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import tooz.coordination

from lockd.config import Settings
from tests.etcd_process import EtcdMember
from tests.faults.lossy_proxy import LossyProxy
from tests.integration.api_server import ApiServer
from tests.procs import wait_for

pytestmark = [pytest.mark.faults]


@pytest.fixture
def gate(etcd: EtcdMember) -> Iterator[LossyProxy]:
    proxy = LossyProxy(etcd.client_port)
    yield proxy
    proxy.close()


def held(http: httpx.Client, prefix: str) -> dict[str, int] | None:
    """Lock name -> token of the locks held under ``prefix``, as the sidecar sees them; None while it cannot."""
    answer = http.get("/v1/locks", params={"prefix": prefix})
    if answer.status_code != 200:
        return None
    return {lock["name"]: lock["token"] for lock in answer.json()["locks"]}


def history(http: httpx.Client, name: str) -> dict[str, Any]:
    answer = http.get("/v1/history", params={"name": name})
    answer.raise_for_status()
    return answer.json()


def test_holds_that_end_while_the_watch_is_cut_are_recorded_as_unobserved(
    gate: LossyProxy, coordinator: tooz.coordination.CoordinationDriver, lock_name: str
) -> None:
    settings = Settings(backend_url=f"lockd+etcd3+http://127.0.0.1:{gate.port}?lease_ttl=5&timeout=2")
    released, retaken, kept = (f"{lock_name}-{what}" for what in ("released", "retaken", "kept"))
    locks = {name: coordinator.get_lock(name.encode()) for name in (released, retaken, kept)}
    with ApiServer(settings) as server, server.client() as http:
        for lock in locks.values():
            assert lock.acquire(blocking=False)
        tokens = {name: lock.token for name, lock in locks.items()}
        wait_for(lambda: held(http, lock_name) == tokens, 10, "the sidecar to see the three holds")

        gate.cut()
        wait_for(lambda: http.get("/v1/locks").status_code == 503, 10, "the sidecar to find etcd unreadable")
        before = time.time()
        assert locks[released].release()
        assert locks[retaken].release() and locks[retaken].acquire(blocking=False)
        after = time.time()
        gate.open()
        now = {released: None, retaken: locks[retaken].token, kept: tokens[kept]}
        wait_for(
            lambda: held(http, lock_name) == {name: token for name, token in now.items() if token},
            15,
            "the sidecar to read etcd again",
        )

        for name in (released, retaken):
            (hold,) = history(http, name)["holds"]
            assert (hold["how"], hold["token"]) == ("unobserved", tokens[name]), hold
            low, high = hold["ended_between"]
            assert low <= before and high >= after, (hold, before, after)
            assert hold["ended"] == high and hold["held"] is None and hold["started"] <= low
        assert [h["token"] for h in history(http, retaken)["held"]] == [locks[retaken].token]
        assert history(http, kept)["holds"] == [], "a hold that went on through the cut did not end"
        for lock in locks.values():
            lock.release()
