"""32 processes race to move one volume available -> deleting: exactly one wins, every loser sees "deleting".

The control does what Cinder's API did before conditional_update: read the status, check it, write it in a
second step. A barrier between the read and the write makes its failure deterministic: everyone wins.
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, op_put
from lockd.options import parse_backend_url
from lockd.status import CONFLICT, open_store

CONTENDERS = 32
# fork: 32 children start in well under a second; they import nothing new and open their own connections.
_mp = multiprocessing.get_context("fork")


def _cas_contender(url: str, kind: str, vid: str, barrier: Any, results: Any) -> None:
    try:
        store = open_store(url)
        barrier.wait(60)
        result = store.compare_and_set(kind, vid, ["available", "error"], "deleting")
        results.put((result.ok, result.current, result.reason))
        store.close()
    except BaseException as exc:  # report, never hang the parent
        results.put(("error", repr(exc), None))


def race(
    url: str, kind: str, vid: str, contender: Callable[..., None] = _cas_contender, n: int = CONTENDERS
) -> list[tuple[Any, Any, Any]]:
    """Run ``n`` contender processes released together by a barrier; their (ok, current, reason) answers."""
    barrier, results = _mp.Barrier(n), _mp.Queue()
    procs = [_mp.Process(target=contender, args=(url, kind, vid, barrier, results)) for _ in range(n)]
    for proc in procs:
        proc.start()
    try:
        answers = [results.get(timeout=90) for _ in procs]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    return answers


def assert_exactly_one_winner(answers: list[tuple[Any, Any, Any]]) -> None:
    errors = [a for a in answers if a[0] == "error"]
    assert not errors, errors[:3]
    winners = [a for a in answers if a[0] is True]
    losers = [a for a in answers if a[0] is False]
    assert len(winners) == 1, f"{len(winners)} winners"
    assert len(losers) == len(answers) - 1
    assert all(current == "deleting" and reason == CONFLICT for _, current, reason in losers), set(losers)


def _naive_etcd_contender(url: str, kind: str, vid: str, barrier: Any, results: Any) -> None:
    """Read-check-write in two steps (get, then put), as etcd3gw users would write it."""
    try:
        client = EtcdClient(parse_backend_url(url))
        key = keys.status_key(kind, vid)
        kv = client.get(key)
        saw = kv.value.decode() if kv else None
        barrier.wait(60)
        if saw in ("available", "error"):
            client.txn([], [op_put(key, b"deleting")])
            results.put((True, "deleting", None))
        else:
            results.put((False, saw, CONFLICT))
        client.close()
    except BaseException as exc:
        results.put(("error", repr(exc), None))


@pytest.fixture
def vid() -> str:
    return str(uuid.uuid4())


@pytest.mark.parametrize("backend", ["etcd", "sqlite"])
def test_32_processes_one_winner(backend: str, etcd_url: str, tmp_path: Path, vid: str) -> None:
    url = etcd_url if backend == "etcd" else f"sqlite:///{tmp_path}/race.db"
    store = open_store(url)  # creates the SQL tables before the children race
    assert store.compare_and_set("volume", vid, [None], "available").ok
    assert_exactly_one_winner(race(url, "volume", vid))
    assert store.get_record("volume", vid)[0] == "deleting"  # type: ignore[index]
    history = store.history("volume", vid)
    assert [(e["from"], e["to"]) for e in history] == [("available", "deleting"), (None, "available")]
    store.close()


def test_naive_read_then_write_control_has_many_winners(etcd_url: str, vid: str) -> None:
    client = EtcdClient(parse_backend_url(etcd_url))
    client.txn([], [op_put(keys.status_key("volume", vid), b"available")])
    client.close()
    answers = race(etcd_url, "volume", vid, _naive_etcd_contender)
    winners = [a for a in answers if a[0] is True]
    assert not [a for a in answers if a[0] == "error"]
    assert len(winners) > 1, "the control should show the race the store closes"
