"""The status store contract, run on the etcd store and the SQLite store alike (real etcd, real SQLite file)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tooz.coordination

import lockd.status
from lockd import runtime
from lockd.errors import BackendError, UsageError
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, op_put
from lockd.options import parse_backend_url
from lockd.status import CONFLICT, FENCED, HISTORY_KEEP, NOT_OWNER, StatusStore, open_store


@pytest.fixture(params=["etcd", "sqlite"])
def store(request: pytest.FixtureRequest, etcd_url: str, tmp_path: Path) -> Iterator[StatusStore]:
    if request.param == "etcd":
        opened = open_store(etcd_url)
    else:
        opened = open_store(f"sqlite:///{tmp_path}/status.db")
    yield opened
    opened.close()


@pytest.fixture
def vid() -> str:
    return str(uuid.uuid4())


def test_create_then_transition_then_read(store: StatusStore, vid: str) -> None:
    assert store.get_record("volume", vid) is None
    created = store.compare_and_set("volume", vid, [None], "available")
    assert created.ok and created.current == "available" and created.reason is None
    moved = store.compare_and_set("volume", vid, ("available", "error"), "deleting")
    assert moved.ok and moved.revision > created.revision
    assert store.get_record("volume", vid) == ("deleting", moved.revision)


def test_conflict_reports_current_and_writes_nothing(store: StatusStore, vid: str) -> None:
    store.compare_and_set("volume", vid, [None], "in-use")
    before = store.get_record("volume", vid)
    result = store.compare_and_set("volume", vid, ["available", "error"], "deleting")
    assert (result.ok, result.current, result.reason) == (False, "in-use", CONFLICT)
    assert store.get_record("volume", vid) == before
    assert len(store.history("volume", vid)) == 1


def test_absent_resource_conflicts_unless_none_is_expected(store: StatusStore, vid: str) -> None:
    result = store.compare_and_set("volume", vid, ["available"], "deleting")
    assert (result.ok, result.current, result.revision) == (False, None, 0)
    assert store.get_record("volume", vid) is None


def test_kinds_are_separate(store: StatusStore, vid: str) -> None:
    store.compare_and_set("volume", vid, [None], "available")
    assert store.get_record("snapshot", vid) is None
    assert store.compare_and_set("snapshot", vid, [None], "creating").ok
    assert store.get_record("volume", vid)[0] == "available"  # type: ignore[index]


def test_history_is_newest_first_and_bounded(store: StatusStore, vid: str) -> None:
    store.compare_and_set("volume", vid, [None], "s0", who="creator")
    for i in range(1, HISTORY_KEEP + 5):
        assert store.compare_and_set("volume", vid, [f"s{i - 1}"], f"s{i}", fence=100 + i).ok
    entries = store.history("volume", vid, limit=1000)
    assert len(entries) == HISTORY_KEEP
    last = HISTORY_KEEP + 4
    assert entries[0]["from"] == f"s{last - 1}" and entries[0]["to"] == f"s{last}"
    assert entries[0]["token"] == 100 + last and isinstance(entries[0]["at"], float) and entries[0]["who"]
    assert [e["to"] for e in store.history("volume", vid, limit=3)] == [f"s{last}", f"s{last - 1}", f"s{last - 2}"]


def test_token_fence_refuses_lower_token_after_higher_landed(store: StatusStore, vid: str) -> None:
    store.compare_and_set("volume", vid, [None], "available")
    assert store.compare_and_set("volume", vid, ["available"], "deleting", fence=50).ok
    stale = store.compare_and_set("volume", vid, ["deleting"], "error", fence=49)
    assert (stale.ok, stale.current, stale.reason) == (False, "deleting", FENCED)
    assert store.compare_and_set("volume", vid, ["deleting"], "deleted", fence=50).ok  # same holder again
    assert store.compare_and_set("volume", vid, ["deleted"], "gone", fence=51).ok
    assert store.compare_and_set("volume", vid, ["gone"], "x", fence=50).reason == FENCED
    assert [e["to"] for e in store.history("volume", vid)] == ["gone", "deleted", "deleting", "available"]


def test_lock_fence_writes_while_held_and_is_refused_once_broken(
    store: StatusStore, vid: str, coordinator: tooz.coordination.CoordinationDriver, lock_name: str
) -> None:
    store.compare_and_set("volume", vid, [None], "available")
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    written = store.compare_and_set("volume", vid, ["available"], "deleting", fence=lock)
    assert written.ok and store.history("volume", vid)[0]["token"] == lock.token
    # An operator breaks the lock; our session is alive, so only etcd knows the lock is no longer ours.
    assert coordinator.get_lock(lock_name).break_()
    assert lock.token is not None
    refused = store.compare_and_set("volume", vid, ["deleting"], "deleted", fence=lock)
    assert (refused.ok, refused.current, refused.reason) == (False, "deleting", NOT_OWNER)
    assert store.get_record("volume", vid)[0] == "deleting"  # type: ignore[index]
    lock.release()


def test_released_lock_is_no_fence(
    store: StatusStore, vid: str, coordinator: tooz.coordination.CoordinationDriver, lock_name: str
) -> None:
    store.compare_and_set("volume", vid, [None], "available")
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    lock.release()
    refused = store.compare_and_set("volume", vid, ["available"], "deleting", fence=lock)
    assert (refused.ok, refused.reason) == (False, NOT_OWNER)
    assert store.get_record("volume", vid)[0] == "available"  # type: ignore[index]


BAD_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("empty kind", {"kind": ""}),
    ("empty id", {"id": ""}),
    ("non-str kind", {"kind": 7}),
    ("non-str id", {"id": None}),
    ("id too long", {"id": "x" * 256}),
    ("huge status", {"new": "d" * 100_000}),
    ("non-str new status", {"new": 3}),
    ("None as new status", {"new": None}),
    ("bytes status", {"new": b"deleting"}),
    ("control characters", {"new": "dele\nting"}),
    ("bare string expected", {"expected": "available"}),
    ("empty expected", {"expected": []}),
    ("non-str expected status", {"expected": ["available", 1]}),
    ("huge expected status", {"expected": ["a" * 300]}),
    ("too many expected", {"expected": [f"s{i}" for i in range(100)]}),
    ("bool fence", {"fence": True}),
    ("negative fence", {"fence": -4}),
    ("str fence", {"fence": "12"}),
]


@pytest.mark.parametrize("case", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_a_usage_error_and_writes_nothing(
    store: StatusStore, vid: str, case: tuple[str, dict[str, Any]]
) -> None:
    store.compare_and_set("volume", vid, [None], "available")
    before, history = store.get_record("volume", vid), store.history("volume", vid)
    call: dict[str, Any] = {"kind": "volume", "id": vid, "expected": ["available"], "new": "deleting"}
    call.update(case[1])
    with pytest.raises(UsageError) as info:
        store.compare_and_set(**call)
    assert str(info.value)  # a reason a person can read
    assert store.get_record("volume", vid) == before and store.history("volume", vid) == history


def test_bad_reads_are_usage_errors(store: StatusStore) -> None:
    with pytest.raises(UsageError, match="kind"):
        store.get_record("", "x")
    with pytest.raises(UsageError, match="limit"):
        store.history("volume", "x", limit=-1)


def test_etcd_store_refuses_to_overwrite_a_foreign_value(etcd_url: str, vid: str) -> None:
    client = EtcdClient(parse_backend_url(etcd_url))
    key = keys.status_key("volume", vid)
    client.txn([], [op_put(key, b"not json")])
    store = open_store(None, client)
    with pytest.raises(BackendError, match="not lockd's JSON"):
        store.compare_and_set("volume", vid, ["available", None], "deleting")
    assert client.get(key).value == b"not json"  # type: ignore[union-attr]
    client.close()


@pytest.mark.parametrize("url", ["", "redis://x", "sqlite-ish", "ftp://h/x", "sqlite:///x?tables=volume"])
def test_bad_store_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        open_store(url)


@pytest.mark.parametrize("backend", ["etcd", "sqlite"])
def test_module_functions_follow_configure(etcd_url: str, tmp_path: Path, vid: str, backend: str) -> None:
    status_url = f"sqlite:///{tmp_path}/mod.db" if backend == "sqlite" else None
    runtime.configure(backend_url=etcd_url, status_url=status_url)
    try:
        assert lockd.status.get("volume", vid) is None
        assert lockd.status.compare_and_set("volume", vid, [None], "available").ok
        assert lockd.status.get("volume", vid) == "available"
        assert lockd.status.history("volume", vid)[0]["who"] == runtime.member_id()
        other = open_store(status_url) if status_url else open_store(etcd_url)
        assert other.get_record("volume", vid)[0] == "available"  # type: ignore[index]
        other.close()
    finally:
        runtime.configure()
