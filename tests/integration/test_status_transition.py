"""``@drivers_shim.transition`` on real etcd: expected -> pending -> success | failure, fenced inside synchronized."""

from __future__ import annotations

import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import drivers_shim
import lockd.status
from drivers_shim.synchronized import held_locks
from lockd import runtime
from lockd.errors import TransitionConflict, UsageError
from lockd.status import NOT_OWNER


@pytest.fixture(params=["etcd", "sqlite"])
def shim(request: pytest.FixtureRequest, etcd_url: str, tmp_path: Path) -> Iterator[None]:
    status_url = f"sqlite:///{tmp_path}/shim.db" if request.param == "sqlite" else None
    drivers_shim.configure(backend_url=etcd_url, prefix="cinder-", status_url=status_url)
    yield
    runtime.configure()


def _volume(status: str | None = "available") -> types.SimpleNamespace:
    volume = types.SimpleNamespace(id=str(uuid.uuid4()))
    if status is not None:
        assert lockd.status.compare_and_set("volume", volume.id, [None], status).ok
    return volume


DELETE = {
    "kind": "volume",
    "id": "{volume.id}",
    "expected": ("available", "error"),
    "pending": "deleting",
    "success": "deleted",
    "failure": "error_deleting",
}


@drivers_shim.transition(**DELETE)
def delete_volume(volume: types.SimpleNamespace, seen: list[str | None]) -> str:
    seen.append(lockd.status.get("volume", volume.id))
    return "done"


def test_success_moves_through_pending(shim: None) -> None:
    volume, seen = _volume(), []
    assert delete_volume(volume, seen) == "done"
    assert seen == ["deleting"]
    assert lockd.status.get("volume", volume.id) == "deleted"
    assert [e["to"] for e in lockd.status.history("volume", volume.id)] == ["deleted", "deleting", "available"]


def test_failure_sets_failure_status_and_propagates(shim: None) -> None:
    @drivers_shim.transition(**DELETE)
    def broken_delete(volume: types.SimpleNamespace) -> None:
        raise OSError("backend array said no")

    volume = _volume("error")
    with pytest.raises(OSError, match="array said no"):
        broken_delete(volume)
    assert lockd.status.get("volume", volume.id) == "error_deleting"


def test_conflict_raises_with_current_and_body_never_runs(shim: None) -> None:
    volume, seen = _volume("in-use"), []
    with pytest.raises(TransitionConflict) as info:
        delete_volume(volume, seen)
    assert info.value.current == "in-use" and "in-use" in str(info.value)
    assert seen == [] and lockd.status.get("volume", volume.id) == "in-use"


def test_absent_resource_is_a_conflict_with_current_none(shim: None) -> None:
    volume, seen = _volume(None), []
    with pytest.raises(TransitionConflict) as info:
        delete_volume(volume, seen)
    assert info.value.current is None and seen == []


def test_second_call_conflicts_after_first_finished(shim: None) -> None:
    volume = _volume()
    delete_volume(volume, [])
    with pytest.raises(TransitionConflict) as info:
        delete_volume(volume, [])
    assert info.value.current == "deleted"


def test_writes_inside_synchronized_are_fenced_with_the_lock_token(shim: None) -> None:
    tokens: list[int] = []

    @drivers_shim.synchronized("{volume.id}-delete_volume")
    @drivers_shim.transition(**DELETE)
    def guarded_delete(volume: types.SimpleNamespace) -> None:
        (lock,) = held_locks.get()
        tokens.append(lock.token)

    volume = _volume()
    guarded_delete(volume)
    history = lockd.status.history("volume", volume.id)
    assert [(e["to"], e["token"]) for e in history[:2]] == [("deleted", tokens[0]), ("deleting", tokens[0])]


def test_unrelated_lock_does_not_fence(shim: None) -> None:
    @drivers_shim.synchronized("pure-{host}")
    @drivers_shim.transition(**DELETE)
    def delete_on_host(volume: types.SimpleNamespace, host: str) -> None:
        pass

    volume = _volume()
    delete_on_host(volume, "host1")
    assert [e["token"] for e in lockd.status.history("volume", volume.id)[:2]] == [None, None]


def test_lock_broken_mid_call_cannot_record_success(shim: None) -> None:
    @drivers_shim.synchronized("{volume.id}-delete_volume")
    @drivers_shim.transition(**DELETE)
    def delete_while_broken(volume: types.SimpleNamespace) -> None:
        # An operator force-releases the lock while the driver works (``lockd break``).
        runtime.coordinator().get_lock(f"cinder-{volume.id}-delete_volume").break_()

    volume = _volume()
    with pytest.raises(TransitionConflict) as info:
        delete_while_broken(volume)
    assert info.value.reason == NOT_OWNER
    assert lockd.status.get("volume", volume.id) == "deleting"


def test_bad_templates_and_statuses_are_usage_errors(shim: None) -> None:
    with pytest.raises(UsageError):
        drivers_shim.transition("volume", "{volume.id}", "available", "deleting", "deleted", "error")
    with pytest.raises(UsageError):
        drivers_shim.transition("", "{volume.id}", ["available"], "deleting", "deleted", "error")
    with pytest.raises(UsageError):
        drivers_shim.transition("volume", "{volume.id}", ["available"], "", "deleted", "error")

    @drivers_shim.transition("volume", "{volume.nope}", ["available"], "deleting", "deleted", "error")
    def bad_id(volume: types.SimpleNamespace) -> None:
        raise AssertionError("must not run")

    volume = _volume()
    with pytest.raises(UsageError, match="cannot be rendered"):
        bad_id(volume)
    assert lockd.status.get("volume", volume.id) == "available"


def test_body_exception_propagates_even_when_failure_status_is_refused(shim: None) -> None:
    @drivers_shim.synchronized("{volume.id}-delete_volume")
    @drivers_shim.transition(**DELETE)
    def delete_then_fail(volume: types.SimpleNamespace) -> None:
        runtime.coordinator().get_lock(f"cinder-{volume.id}-delete_volume").break_()
        raise OSError("array unreachable")

    volume = _volume()
    with pytest.raises(OSError, match="array unreachable"):
        delete_then_fail(volume)
    assert lockd.status.get("volume", volume.id) == "deleting"  # the fenced failure write was refused
