"""Ambiguous acquire: the lock txn commits in etcd but its answer never reaches the client.

The injection is deterministic: the client talks to etcd through tests/faults/lossy_proxy.py, which forwards
the chosen txn, lets it commit, and drops etcd's answer (``hang``: the client times out; ``reset``: the
connection dies). The dropped answer is kept, so each test first checks that the txn really committed.

What must happen: the client either recognises the lock key it created (its holder value carries the
waiter id) and holds it with that key's token, or, when no member answers at all, gives up with an error
*and deletes the key it may have created*. Either way no lock key is left held by nobody-knows-who.
Without the mechanism: a retry that does not recognise its own key queues behind it, and because that key
sits on the client's own live session lease, it waits for ever; a client that gives up without cleaning up
leaves the key on a lease it keeps refreshing, held for as long as the process lives. The stock tooz control
shows the milder form: its orphaned key holds the lock for a full lease TTL while no client owns it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
import tooz.coordination

from lockd.errors import BackendError
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, b64
from tests.etcd_process import EtcdMember, queue_entries
from tests.faults.lossy_proxy import LossyProxy
from tests.procs import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.both_etcd]

Starter = Callable[[str], tooz.coordination.CoordinationDriver]


@pytest.mark.parametrize("mode", ["hang", "reset"])
def test_lost_answer_to_uncontended_take_is_recognised(
    etcd: EtcdMember, proxy: LossyProxy, direct: EtcdClient, lock_name: str, mode: str, coordinator_via: Starter
) -> None:
    """The first txn takes the lock; its answer is lost; the repeat (on the next endpoint after a timeout,
    on the same one after a reset) finds the key with our waiter id and holds it with the original token."""
    coord = coordinator_via(f"lockd+etcd3+http://{proxy.endpoint}?endpoints={etcd.endpoint}&lease_ttl=3&timeout=1")
    try:
        lock = coord.get_lock(lock_name.encode())
        key = keys.lock_key(lock_name)
        proxy.lose_next("kv/txn", b64(key).encode(), mode)
        assert lock.acquire(blocking=10), "the repeated txn did not recognise the lock key it created"
        revision = proxy.lost_txn_revision()
        assert lock.token == revision
        assert direct.get(key).create_revision == revision
        assert lock.release()
        assert direct.get(key) is None
        # the repeat may have queued before it saw the key was ours; that entry must go with the release
        assert queue_entries(direct, lock_name) == [], "the repeated txn left a queue entry behind"
    finally:
        coord.stop()


def test_lost_answer_to_queued_take_is_recognised(
    etcd: EtcdMember, proxy: LossyProxy, direct: EtcdClient, lock_name: str, coordinator_via: Starter
) -> None:
    """A queued waiter's take txn commits unanswered after the holder leaves; the waiter's repeat finds its own
    key and does not queue behind it."""
    holder = coordinator_via(f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=3&timeout=1")
    waiter = coordinator_via(f"lockd+etcd3+http://{proxy.endpoint}?endpoints={etcd.endpoint}&lease_ttl=3&timeout=1")
    try:
        held = holder.get_lock(lock_name.encode())
        assert held.acquire(blocking=False)
        lock = waiter.get_lock(lock_name.encode())
        result: list[object] = []
        thread = threading.Thread(target=lambda: result.append(lock.acquire(blocking=30)))
        thread.start()
        wait_for(lambda: queue_entries(direct, lock_name), 10, "the waiter to queue")
        # the take (a put of the lock key), not the waiter's read of its keys, which names the lock key too
        take = f'"request_put": {{"key": "{b64(keys.lock_key(lock_name))}"'.encode()
        proxy.lose_next("kv/txn", take, "hang")
        assert held.release()
        thread.join(30)
        assert result == [True]
        revision = proxy.lost_txn_revision()
        assert lock.token == revision
        assert lock.release()
        assert queue_entries(direct, lock_name) == [], "the holder's queue entry outlived its release"
    finally:
        waiter.stop()
        holder.stop()


def test_unanswered_take_with_no_member_left_is_undone(
    proxy: LossyProxy, direct: EtcdClient, lock_name: str, coordinator_via: Starter
) -> None:
    """The only endpoint loses the answer: acquire raises a connection error (not a hang, not False), and the
    key that did land is deleted at once, while the client's session lives on (so expiry did not do it)."""
    coord = coordinator_via(f"lockd+etcd3+http://{proxy.endpoint}?lease_ttl=3&timeout=1")
    try:
        lock = coord.get_lock(lock_name.encode())
        key = keys.lock_key(lock_name)
        proxy.lose_next("kv/txn", b64(key).encode(), "hang")
        with pytest.raises(BackendError):
            lock.acquire(blocking=True)
        proxy.lost_txn_revision()
        session = coord.session()
        wait_for(lambda: direct.get(key) is None, 10, "the unanswered take to be undone")
        assert session.alive(), "the key went with the lease, not with the client's cleanup"
        assert direct.lease_time_to_live(session.lease_id) > 0
        assert lock.acquire(blocking=False), "the lock is free again for the same client"
        assert lock.release()
    finally:
        coord.stop()


def test_control_stock_tooz_orphans_the_lock_for_a_full_ttl(
    proxy: LossyProxy, direct: EtcdClient, lock_name: str
) -> None:
    """Control: stock tooz loses the same answer. It raises, owns nothing, yet the key it created stays held
    on a lease nobody refreshes, so the lock is unavailable until that lease runs out."""
    coord = tooz.coordination.get_coordinator(
        f"etcd3+http://{proxy.endpoint}?timeout=1&lock_timeout=3", f"stock-{uuid.uuid4().hex[:6]}".encode()
    )
    coord.start()
    try:
        lock = coord.get_lock(lock_name.encode())
        key = keys.lock_key(lock_name)
        proxy.lose_next("kv/txn", b64(key).encode(), "hang")
        with pytest.raises(Exception):  # noqa: B017 - whatever stock tooz raises, it did not get the lock
            lock.acquire(blocking=True)
        proxy.lost_txn_revision()
        assert not lock.acquired
        orphan = direct.get(key)
        assert orphan is not None, "stock tooz was expected to leave its key behind"
        assert direct.lease_time_to_live(orphan.lease) > 0
        assert not lock.acquire(blocking=False), "the orphaned key blocks even the client that created it"
        print(f"\nstock tooz control: orphaned key on lease {orphan.lease:x} blocks the lock until it expires")
    finally:
        coord.stop()
