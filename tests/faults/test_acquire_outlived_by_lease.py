"""An acquire whose answer arrives after the session's lease deadline must not report the lock as held.

Found by the nemesis (tests/nemesis.py, seed 7): a host frozen right after its take txn reached etcd thawed
seconds later, and ``acquire()`` returned True on a session that had already been declared lost (its lease
revoked, its keys gone, another client holding the lock): the caller went on to work unprotected. Here the same
moment is made deterministic with a proxy that, once the take is sent, holds every answer (keepalives too)
past the lease TTL and then delivers them.
"""

from __future__ import annotations

from collections.abc import Callable

import tooz.coordination

from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, b64
from tests.etcd_process import EtcdMember
from tests.faults.lossy_proxy import LossyProxy

Starter = Callable[[str], tooz.coordination.CoordinationDriver]


def test_acquire_answered_after_the_lease_deadline_is_not_a_hold(
    etcd: EtcdMember, proxy: LossyProxy, direct: EtcdClient, lock_name: str, coordinator_via: Starter
) -> None:
    coord = coordinator_via(f"lockd+etcd3+http://{proxy.endpoint}?lease_ttl=2&timeout=6")
    lock = coord.get_lock(lock_name.encode())
    proxy.stall_next("kv/txn", b64(keys.lock_key(lock_name)).encode(), seconds=3.5)
    ok = lock.acquire(blocking=10)
    held = lock.acquired
    assert not (ok and not held), "acquire() said True for a hold whose lease deadline had already passed"
    if ok:  # it went on to take the lock again on a fresh session: then that hold is real, in etcd too
        kv = direct.get(keys.lock_key(lock_name))
        assert kv is not None and kv.create_revision == lock.token
        assert lock.release()
