"""The holder's keepalive is blocked (etcd SIGSTOPped past the TTL): it must be told the lock is lost no later
than the server could expire it.

The client's deadline is ``confirmed_until`` = send time of the last answered refresh + TTL. etcd counts the
TTL from when it *handles* that refresh, later than we sent it, so the server cannot expire the lease before
that deadline; from the deadline on, ``acquired``/``is_still_owner()`` answer False and the session's ``lost``
event fires (listeners run) without any answer from etcd.

Two shapes of the fault:
  * the whole cluster paused: nobody can expire anything while it is stopped, so the holder must hear of
    the loss *while etcd is still paused*;
  * only the holder's member paused (the holder has no other endpoint): the rest of the cluster expires the
    lease; an observer on another member records when the key is gone, and the holder's deadline must not be
    later than that.
Why it would fail without the mechanism: a client that learns of lease loss only from etcd's answer (stock
tooz's heartbeat even ignores that answer) hears nothing while its member is stopped: in the first shape
``lost`` never fires before the resume and the test fails at its deadline; in the second the holder still
reports the lock as held after another process could have taken it.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import tooz.coordination

from lockd.errors import BackendError
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url
from tests.etcd_cluster import EtcdCluster

pytestmark = pytest.mark.faults

LEASE_TTL = 2


def _holder(url: str, name: str) -> tuple[tooz.coordination.CoordinationDriver, object, list[float]]:
    coord = tooz.coordination.get_coordinator(url, f"holder-{uuid.uuid4().hex[:6]}".encode())
    coord.start(start_heart=True)
    lock = coord.get_lock(name.encode())
    assert lock.acquire(blocking=False)
    told: list[float] = []
    lock.on_lost(lambda: told.append(time.monotonic()))  # type: ignore[attr-defined]
    return coord, lock, told


def test_holder_is_told_while_the_whole_cluster_is_paused(cluster: EtcdCluster, lock_name: str) -> None:
    coord, lock, told = _holder(cluster.url(cluster.members[0], lease_ttl=LEASE_TTL, timeout=1), lock_name)
    try:
        session = lock.session  # type: ignore[attr-defined]
        for m in cluster.members:
            cluster.pause(m)
        try:
            assert session.lost.wait(LEASE_TTL * 10), "the holder was not told while etcd stayed paused"
            # etcd is still stopped here: the server has not expired (or even seen) anything yet.
            assert told and told[0] >= session.confirmed_until - 0.001
            assert not lock.acquired  # type: ignore[attr-defined]
            assert not lock.is_still_owner()  # type: ignore[attr-defined]
        finally:
            for m in cluster.members:
                cluster.resume(m)
        print(f"\nwhole cluster paused: told {told[0] - session.confirmed_until:.3f}s after the client deadline")
    finally:
        coord.stop()


def test_holder_cut_off_from_a_live_cluster_is_told_no_later_than_expiry(cluster: EtcdCluster, lock_name: str) -> None:
    leader = cluster.wait_for_leader()
    follower = cluster.followers()[0]
    # Single endpoint on purpose: with failover the holder would simply keep its lease (test_failover_*).
    coord, lock, told = _holder(f"lockd+etcd3+http://{follower.endpoint}?lease_ttl={LEASE_TTL}&timeout=1", lock_name)
    observer = EtcdClient(parse_backend_url(f"lockd+etcd3+http://{leader.endpoint}?timeout=2"))
    key = keys.lock_key(lock_name)
    gone_at: list[float] = []
    stop = threading.Event()

    def observe() -> None:
        while not stop.is_set():
            try:
                if observer.get(key) is None:
                    gone_at.append(time.monotonic())
                    return
            except BackendError:
                pass
            time.sleep(0.01)

    watcher = threading.Thread(target=observe, daemon=True)
    try:
        session = lock.session  # type: ignore[attr-defined]
        assert observer.get(key) is not None
        cluster.pause(follower)
        watcher.start()
        watcher.join(LEASE_TTL * 10)
        assert gone_at, "the live members never expired the cut-off holder's lease"
        assert session.confirmed_until <= gone_at[0], "the holder's deadline came after the server expired it"
        assert not lock.acquired  # type: ignore[attr-defined]
        assert session.lost.wait(5) and told, "the lost event never fired"
        print(
            f"\nholder cut off: client deadline {gone_at[0] - session.confirmed_until:.3f}s before the key was seen "
            f"gone; lost event {told[0] - session.confirmed_until:.3f}s after the deadline"
        )
    finally:
        stop.set()
        cluster.resume(follower)
        observer.close()
        coord.stop()
