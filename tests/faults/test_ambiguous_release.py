"""Ambiguous release, break and status write: the txn commits in etcd, its answer never reaches the client.

tests/faults/lossy_proxy.py forwards the chosen txn, lets it commit and drops etcd's answer; the client times
out (``hang``) or sees the connection die (``reset``) and repeats the txn, through the next endpoint or the
same one. The repeat fails its compare, because the first send already did the work. Each caller must
recognise its own earlier success by something only it wrote, and must not take someone else's for its own:

- release: the repeat finds our key gone; no force-break of our token is recorded and our lease is still
  confirmed, so nobody but us deleted it: ``release()`` is True (it used to answer False, and the shim then
  raised LockLost and the lockutils patch logged LOCK LOST for a lock that was never lost);
- break: the audit record the first send wrote carries this break's id: ``break_()`` is True (it used to
  answer False, or the admin API 404, for a lock it had just broken);
- a status compare-and-set: the record the first send wrote carries this call's id: ``ok`` is True.
And the negative: a release after a real force-break is still False.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
import tooz.coordination

import lockd.status
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, b64
from lockd.force_break import break_lock
from tests.etcd_process import EtcdMember, queue_entries
from tests.faults.lossy_proxy import LossyProxy
from tests.procs import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.both_etcd]

Starter = Callable[[str], tooz.coordination.CoordinationDriver]


def _url(proxy: LossyProxy, etcd: EtcdMember) -> str:
    """Through the proxy, with etcd itself as the next endpoint: a ``hang`` repeats there after the timeout, a
    ``reset`` repeats on the proxy over a new connection."""
    return f"lockd+etcd3+http://{proxy.endpoint}?endpoints={etcd.endpoint}&lease_ttl=3&timeout=1"


@pytest.mark.parametrize("mode", ["hang", "reset"])
def test_lost_answer_to_release_is_still_a_release(
    etcd: EtcdMember, proxy: LossyProxy, direct: EtcdClient, lock_name: str, mode: str, coordinator_via: Starter
) -> None:
    """The holder came through the queue, so its release also deletes the queue entry its successor watches."""
    first = coordinator_via(f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=3&timeout=1")
    coord = coordinator_via(_url(proxy, etcd))
    before = first.get_lock(lock_name.encode())
    assert before.acquire(blocking=False)
    holder = coord.get_lock(lock_name.encode())
    waiting = threading.Thread(target=holder.acquire)
    waiting.start()
    wait_for(lambda: queue_entries(direct, lock_name), 10, "the holder to queue")
    assert before.release()
    waiting.join(10)
    assert holder.acquired and len(queue_entries(direct, lock_name)) == 1

    proxy.lose_next("kv/txn", b64(keys.lock_key(lock_name)).encode(), mode)
    assert holder.release() is True, "the repeated release did not recognise its own landed delete"
    proxy.lost_txn_revision()
    assert direct.get(keys.lock_key(lock_name)) is None
    assert queue_entries(direct, lock_name) == []


def test_release_after_a_real_break_is_still_reported(
    etcd: EtcdMember, proxy: LossyProxy, direct: EtcdClient, lock_name: str, coordinator_via: Starter
) -> None:
    """The evidence works both ways: broken (audited) while held, then a repeated release: False."""
    coord = coordinator_via(_url(proxy, etcd))
    holder = coord.get_lock(lock_name.encode())
    assert holder.acquire(blocking=False)
    assert break_lock(direct, lock_name, "test") is not None
    proxy.lose_next("kv/txn", b64(keys.lock_key(lock_name)).encode(), "hang")
    assert holder.release() is False
    assert proxy.lost[0].get("succeeded") is not True  # the first send found the key gone too


@pytest.mark.parametrize("mode", ["hang", "reset"])
def test_lost_answer_to_break_is_still_a_break(
    etcd: EtcdMember, proxy: LossyProxy, direct: EtcdClient, lock_name: str, mode: str, coordinator_via: Starter
) -> None:
    holder = coordinator_via(f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=3&timeout=1")
    breaker = coordinator_via(_url(proxy, etcd))
    held = holder.get_lock(lock_name.encode())
    assert held.acquire(blocking=False)
    token = held.token
    proxy.lose_next("kv/txn", b64(keys.lock_key(lock_name)).encode(), mode)
    assert breaker.get_lock(lock_name.encode()).break_() is True, "the repeated break did not recognise itself"
    proxy.lost_txn_revision()
    assert direct.get(keys.lock_key(lock_name)) is None
    assert direct.get(keys.audit_key(lock_name, token)) is not None
    assert held.is_still_owner() is False
    assert held.release() is False


@pytest.mark.parametrize("mode", ["hang", "reset"])
def test_lost_answer_to_status_write_is_still_a_write(
    etcd: EtcdMember, proxy: LossyProxy, direct: EtcdClient, mode: str
) -> None:
    store = lockd.status.open_store(_url(proxy, etcd))
    vid = str(uuid.uuid4())
    try:
        assert store.compare_and_set("volume", vid, [None], "available").ok
        proxy.lose_next("kv/txn", b64(keys.status_key("volume", vid)).encode(), mode)
        moved = store.compare_and_set("volume", vid, ["available"], "deleting")
        assert moved.ok and moved.current == "deleting", moved
        assert moved.revision == proxy.lost_txn_revision()
    finally:
        store.close()
