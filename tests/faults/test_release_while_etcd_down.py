"""A release that cannot reach etcd must not leave the lock held by a session that lives on.

The holder's session survives a short etcd outage (shorter than its TTL), so its lease, and any key on it,
would stay forever if the failed delete were simply dropped. The failed release is handed to the session,
which deletes the key (only if it still carries our token) as soon as etcd answers again.
Why it would fail without the mechanism: after etcd returns, the lock key would still exist on a lease the
keepalive keeps refreshing, and the waiter below would never get the lock while the holder's process runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import tooz.coordination

from lockd.errors import BackendError
from tests.etcd_process import EtcdMember

pytestmark = pytest.mark.faults


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdMember]:
    member = EtcdMember("release", tmp_path / "data")
    member.start()
    yield member
    member.stop()


def test_release_during_an_outage_is_completed_when_etcd_returns(own_etcd: EtcdMember, lock_name: str) -> None:
    url = f"lockd+etcd3+http://{own_etcd.endpoint}?lease_ttl=8&timeout=0.5"
    holder = tooz.coordination.get_coordinator(url, f"holder-{uuid.uuid4().hex[:6]}".encode())
    other = tooz.coordination.get_coordinator(url, f"other-{uuid.uuid4().hex[:6]}".encode())
    holder.start(start_heart=True)
    other.start(start_heart=True)
    try:
        lock = holder.get_lock(lock_name)
        assert lock.acquire()
        session = lock.session
        own_etcd.kill()
        with pytest.raises(BackendError):
            lock.release()
        own_etcd.start()
        waiter = other.get_lock(lock_name)
        assert waiter.acquire(blocking=15), "the failed release was never completed"
        assert not session.lost.is_set(), "the key went with the lease, not with the deferred release"
        waiter.release()
    finally:
        other.stop()
        holder.stop()
