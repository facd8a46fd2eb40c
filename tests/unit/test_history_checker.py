"""The nemesis checker (tests/history.py) finds each kind of violation in a history that has it, and none in one
that does not: a checker that cannot fail would make every nemesis run green."""

from __future__ import annotations

import pytest

from tests import history
from tests.history import Deletion, Write


def acquire(client: str, at: float, token: int, name: str = "v") -> dict:
    return {"client": client, "op": "acquire", "name": name, "start": at - 0.01, "end": at, "ok": True, "token": token}


def release(client: str, at: float, token: int, valid_until: float | None = None, name: str = "v") -> dict:
    return {
        "client": client,
        "op": "release",
        "name": name,
        "start": at,
        "end": at + 0.01,
        "ok": True,
        "token": token,
        "valid_until": valid_until,
    }


def test_a_holder_told_lost_in_time_is_no_overlap_and_no_late_loss() -> None:
    # a: lease deadline at 4.0, key deleted by the server at 4.5, b takes over at 4.6; a calls release at 9.
    records = [
        acquire("a", 1.0, 10),
        release("a", 9.0, 10, valid_until=4.0),
        acquire("b", 4.6, 20),
        release("b", 5.0, 20),
    ]
    holds, released = history.nemesis_holds(records)
    assert history.check(holds) == []
    late, leads = history.late_losses(holds, released, [Deletion("v", 10, 4.5), Deletion("v", 20, 5.01)])
    assert late == [] and leads == [0.5]
    assert history.successor_leads(holds, released) == [pytest.approx(0.6)]


def test_a_holder_never_told_overlaps_and_is_late() -> None:
    # The same run without the deadline: stock tooz's holder believes it holds until it releases at 9.
    records = [acquire("a", 1.0, 10), release("a", 9.0, 10), acquire("b", 4.6, 20), release("b", 5.0, 20)]
    holds, released = history.nemesis_holds(records)
    assert [v.kind for v in history.check(holds)] == ["overlap"]
    late, _ = history.late_losses(holds, released, [Deletion("v", 10, 4.5)])
    assert [f.kind for f in late] == ["late-loss"]


def test_a_key_freed_by_its_own_release_is_not_a_loss() -> None:
    records = [acquire("a", 1.0, 10), release("a", 2.0, 10)]
    holds, released = history.nemesis_holds(records)
    assert history.late_losses(holds, released, [Deletion("v", 10, 2.005)]) == ([], [])


def test_stale_write_is_one_accepted_after_a_higher_token_was_acknowledged() -> None:
    fresh = Write("b", "v", "sql", 5.0, 5.1, 20, True)
    stale = Write("a", "v", "sql", 5.2, 5.3, 10, True)
    refused = Write("a", "v", "sql", 5.2, 5.3, 10, False)
    concurrent = Write("a", "v", "sql", 5.05, 5.2, 10, True)  # sent before b's was acknowledged: may order first
    other_store = Write("a", "v", "etcd", 5.2, 5.3, 10, True)
    assert [f.kind for f in history.stale_writes([fresh, stale])] == ["stale-write"]
    assert history.stale_writes([fresh, refused, concurrent, other_store]) == []
