"""A holder paused (SIGSTOP) past its lease: another process takes the lock; the stale holder must find out.

This is Jepsen's finding about etcd locks (ANCHORS.md): a lease alone cannot exclude a paused holder, because
it cannot notice anything until it runs again. lockd's answer has two parts, both asserted here:
  * the client's own deadline: after SIGCONT the stale holder answers ``is_still_owner()`` False, its local
    ``acquired`` is False, and the shim's ``synchronized`` raises ``LockLost`` after the function returns;
  * fencing: its write fenced with the lock (or with its old token) is refused, the new holder's lands.
The control runs stock tooz through the same pause: its holder still believes it holds the lock after
resuming, and the history checker finds two holders at once.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import tooz.coordination

from tests import history
from tests.etcd_process import EtcdMember
from tests.procs import WorkerProcess, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.both_etcd]

LEASE_TTL = 2


def _record(path: Path, member: str, name: str, start: float, end: float, token: int | None) -> None:
    with path.open("a") as f:
        f.write(json.dumps({"member": member, "name": name, "start": start, "end": end, "token": token}) + "\n")


def _take_while_paused(url: str, name: str, stock: bool) -> tuple[tooz.coordination.CoordinationDriver, object]:
    """A second coordinator takes the lock once the paused holder's lease has run out on the server."""
    coord = tooz.coordination.get_coordinator(url, f"successor-{uuid.uuid4().hex[:6]}".encode())
    coord.start(start_heart=True)
    lock = coord.get_lock(name.encode())
    if stock:
        # Stock tooz's blocking acquire can raise tenacity's RetryError; poll non-blocking instead.
        wait_for(lambda: lock.acquire(blocking=False), 30, "the paused stock holder's lease to run out", 0.2)
    else:
        assert lock.acquire(blocking=30), "the paused lockd holder's lease never ran out"
    return coord, lock


FENCES = ["lock.token", "token", "lock"]  # what the holder reads now, what it read at acquisition, the object


@pytest.mark.parametrize("status_store", ["etcd", "sqlite"])
def test_paused_lockd_holder_learns_it_lost_and_its_fenced_writes_are_refused(
    etcd: EtcdMember, lock_name: str, workers: list[WorkerProcess], tmp_path: Path, status_store: str
) -> None:
    """Without the session deadline the resumed holder would still report ``acquired`` and the wrapper would
    return normally; without fencing its write would land on top of the new holder's (see the stock control).
    Its writes are tried fenced three ways; before lockd kept a lost lock's ``.token``, ``fence=lock.token``
    was ``fence=None`` and that unfenced write landed."""
    import lockd.status

    url = f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl={LEASE_TTL}&timeout=1"
    status_url = url if status_store == "etcd" else f"sqlite:///{tmp_path}/status.db"
    path = tmp_path / "history.jsonl"
    kind, rid = "volume", f"vol-{uuid.uuid4().hex[:8]}"
    store = lockd.status.open_store(status_url)
    try:
        assert store.compare_and_set(kind, rid, [None], "available", who="test").ok
        stale = WorkerProcess(
            url,
            lock_name,
            "sync",
            history=str(path),
            status_url=None if status_store == "etcd" else status_url,
            fenced_write={
                "kind": kind,
                "id": rid,
                "expected": ["available", "deleting"],
                "new": "stale-write",
                "fences": FENCES,
            },
        )
        workers.append(stale)
        stale_token = stale.wait_event("acquired")["token"]
        stale.pause()

        coord, lock = _take_while_paused(url, lock_name, stock=False)
        try:
            start = time.time()
            assert lock.token > stale_token
            assert store.compare_and_set(kind, rid, ["available"], "deleting", fence=lock, who="successor").ok

            stale.resume()
            stale.finish()
            resumed = stale.wait_event("resumed")
            assert resumed["still_owner"] is False
            assert resumed["held"] is False
            writes = resumed["writes"]
            assert sorted(writes) == sorted(FENCES)
            assert not any(w["ok"] for w in writes.values()), writes
            assert all(w["current"] == "deleting" and w["reason"] in ("fenced", "not_owner") for w in writes.values())
            assert stale.wait_event("returned", "lock-lost")["event"] == "lock-lost"

            # The stale holder's old token alone (a process that never asks etcd) is refused here too.
            late = store.compare_and_set(kind, rid, ["deleting", "available"], "stale-write", fence=stale_token)
            assert not late.ok and late.current == "deleting"
            assert store.get_record(kind, rid)[0] == "deleting"  # the successor's write stands
            end = time.time()
            assert lock.release()
        finally:
            coord.stop()
        _record(path, "successor", lock_name, start, end, lock.token or None)
    finally:
        store.close()

    holds = history.load_holds(path)
    assert len(holds) == 2
    assert history.check(holds) == []


def test_control_paused_stock_tooz_holder_overlaps_its_successor(
    etcd: EtcdMember, lock_name: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """Control: stock tooz under the same pause. Its holder resumes believing it holds the lock while the
    successor holds it too; the history checker reports the overlap lockd exists to prevent."""
    url = f"etcd3+http://{etcd.endpoint}?timeout=5&lock_timeout=3"
    path = tmp_path / "history.jsonl"
    stale = WorkerProcess(url, lock_name, "hold", history=str(path))
    workers.append(stale)
    stale.wait_event("acquired")
    stale.pause()

    coord, lock = _take_while_paused(url, lock_name, stock=True)
    try:
        start = time.time()
        stale.resume()
        stale.finish()
        released = stale.wait_event("released")
        assert released["held"] is True, "stock tooz was expected to keep believing it holds the lock"
        end = time.time()
        lock.release()
    finally:
        coord.stop()
    _record(path, "successor", lock_name, start, end, None)

    violations = history.check(history.load_holds(path))
    assert [v.kind for v in violations] == ["overlap"], violations
    print(f"\nstock tooz control: {violations[0]}")
