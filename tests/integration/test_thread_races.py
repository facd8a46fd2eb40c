"""Threads and green threads of several processes race one status change or one lock, round after round.

cinder-api and cinder-volume run many (green) threads per process and several processes per host, so these
races run 4 processes x 8 threads (or 2 processes x 64 eventlet green threads, ``eventlet.monkey_patch()``
first, as cinder does). Every thread is warmed by a read (its connection open, the store's cache filled),
all are parked on one event, and the parent says go to every process at once (tests/race.py). 20 rounds (the
lock counter: 5, or 20 with ``LOCKD_LONG_TESTS=1``).

Before each compare-and-set recognised its own write by a per-call id, the etcd store took a failed txn
whose fresh value equalled the bytes *this* call would have written as its own write: two threads of one
process in the same millisecond write identical bytes, so several of them "won" the same round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lockd.status import open_store
from tests.etcd_process import EtcdMember
from tests.long_runs import LONG
from tests.race import ROUNDS, new_ids, run_race

#: Each counter round is 320 handoffs of one lock (2 processes x 16 green threads x 10): 5 rounds in CI, where a
#: lock that let two green threads of one process in at once fails in the first round; 20 with LOCKD_LONG_TESTS=1.
COUNTER_ROUNDS = ROUNDS if LONG else 5


def _seed(url: str, ids: list[str], status: str = "available") -> None:
    store = open_store(url)
    try:
        for rid in ids:
            assert store.compare_and_set("volume", rid, [None], status).ok
    finally:
        store.close()


def assert_one_cas_winner_per_round(rounds: list[list[dict[str, Any]]], contenders: int, count: int = ROUNDS) -> None:
    """``count`` rounds, each with exactly one ``ok``; every loser saw the winner's status and was told it was a
    conflict."""
    assert len(rounds) == count
    for number, results in enumerate(rounds):
        assert len(results) == contenders
        winners = [r for r in results if r["ok"]]
        assert len(winners) == 1, f"round {number}: {len(winners)} winners of {contenders}"
        losers = {(r["current"], r["reason"]) for r in results if not r["ok"]}
        assert losers == {("deleting", "conflict")}, f"round {number}: {losers}"


def _lock_url(etcd: EtcdMember) -> str:
    return f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=5&timeout=5"


@pytest.mark.parametrize(("runtime", "processes", "threads"), [("threads", 4, 8), ("eventlet", 2, 64)])
def test_cas_one_winner_per_round(etcd: EtcdMember, runtime: str, processes: int, threads: int) -> None:
    url = _lock_url(etcd)
    ids = new_ids()
    _seed(url, ids)
    rounds = run_race("cas", ids, url, runtime=runtime, threads=threads, processes=processes)
    assert_one_cas_winner_per_round(rounds, processes * threads)


@pytest.mark.parametrize("runtime", ["eventlet", "threads"])
def test_transition_body_runs_once_per_round(etcd: EtcdMember, runtime: str) -> None:
    """64 green threads (or 8 threads) in each of 2 processes call one @transition(available -> deleting)."""
    url = _lock_url(etcd)
    ids = new_ids()
    _seed(url, ids)
    threads = 64 if runtime == "eventlet" else 8
    rounds = run_race("transition", ids, url, runtime=runtime, threads=threads, processes=2)
    store = open_store(url)
    try:
        for number, results in enumerate(rounds):
            ran = [r for r in results if r["ran"]]
            assert len(ran) == 1, f"round {number}: the body ran {len(ran)} times"
            refused = {(r["current"], r["reason"]) for r in results if not r["ran"]}
            assert refused <= {("deleting", "conflict"), ("deleted", "conflict")}, refused
            assert store.get_record("volume", ids[number])[0] == "deleted"  # type: ignore[index]
    finally:
        store.close()


def test_synchronized_counter_is_exact_under_green_threads(etcd: EtcdMember, tmp_path: Path) -> None:
    """16 green threads x 10 increments in each of 2 processes, read-yield-write under one synchronized lock;
    COUNTER_ROUNDS rounds (5, or 20 with LOCKD_LONG_TESTS=1)."""
    ids = new_ids(COUNTER_ROUNDS)
    run_race(
        "counter", ids, _lock_url(etcd), runtime="eventlet", threads=16, processes=2,
        increments=10, counter_dir=str(tmp_path),
    )  # fmt: skip
    counts = [int((tmp_path / name).read_text()) for name in ids]
    assert counts == [2 * 16 * 10] * COUNTER_ROUNDS
