"""Endpoint failover with locks held and waiters queued: kill -9 the member every client talks to.

A holder and two queued waiters (separate coordinators) all list the same member first. We kill it and wait
until the holder's keepalive has been confirmed again past the point where, without failover, its lease would
have run out (kill time + TTL). Then:
  * the holder still holds: same session lease, same token, and etcd (asked through a live member) still has
    the lock key at that token; its session was never lost;
  * the waiters kept their place: after the holder releases, the first waiter gets the lock, then the second
    (FIFO by their original queue keys), each with a larger token.
Run twice: the killed member is a follower, or it is the leader (failover and an election at once).
Why it would fail without the mechanism: a single-endpoint client (stock tooz) cannot refresh its lease while
its member is dead, so the lease expires, the holder loses the lock and the waiters' queue keys vanish; the
assertion on the holder's unchanged lease and token, and on the waiters' order, would fail.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import tooz.coordination

from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url
from tests.etcd_cluster import EtcdCluster
from tests.etcd_process import queue_entries
from tests.procs import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.both_etcd]

LEASE_TTL = 2


def _coordinator(url: str) -> tooz.coordination.CoordinationDriver:
    coord = tooz.coordination.get_coordinator(url, f"failover-{uuid.uuid4().hex[:6]}".encode())
    coord.start(start_heart=True)
    return coord


@pytest.mark.parametrize("victim", ["follower", "leader"])
def test_held_locks_and_queued_waiters_survive_failover(cluster: EtcdCluster, lock_name: str, victim: str) -> None:
    leader = cluster.wait_for_leader()
    target = leader if victim == "leader" else cluster.followers()[0]
    url = cluster.url(target, lease_ttl=LEASE_TTL, timeout=1)
    survivor = next(m for m in cluster.members if m is not target)
    probe = EtcdClient(parse_backend_url(f"lockd+etcd3+http://{survivor.endpoint}?timeout=3"))
    coords = [_coordinator(url) for _ in range(3)]
    threads: list[threading.Thread] = []
    try:
        holder = coords[0].get_lock(lock_name.encode())
        assert holder.acquire(blocking=False)
        session, token = holder.session, holder.token  # type: ignore[attr-defined]

        order: list[tuple[int, int]] = []  # (waiter index, token) in the order they got the lock
        done = threading.Event()

        def wait(i: int) -> None:
            lock = coords[i].get_lock(lock_name.encode())
            if lock.acquire(blocking=60):
                order.append((i, lock.token))  # type: ignore[attr-defined]
                done.wait(30)  # hold until the test has seen the order, then hand over
                lock.release()

        for i in (1, 2):
            threads.append(threading.Thread(target=wait, args=(i,), daemon=True))
            threads[-1].start()
            # queue them one after the other: 1 before 2
            wait_for(lambda i=i: len(queue_entries(probe, lock_name)) >= i, 10, f"waiter {i} to queue")

        killed = time.monotonic()
        cluster.kill(target)

        def confirmed_past_ttl() -> bool:
            assert not session.lost.is_set(), "the holder's session was lost across the failover"
            return session.confirmed_until >= killed + 2 * LEASE_TTL

        wait_for(confirmed_past_ttl, 30, "the holder's keepalive to continue on another member", 0.05)

        assert holder.session is session and holder.token == token  # type: ignore[attr-defined]
        assert holder.is_still_owner()
        kv = probe.get(keys.lock_key(lock_name))
        assert kv is not None and kv.create_revision == token and kv.lease == session.lease_id
        assert len(queue_entries(probe, lock_name)) == 2, "a waiter lost its place in the queue"
        assert order == []

        assert holder.release()
        wait_for(lambda: order, 30, "the first waiter to get the lock")
        done.set()
        for t in threads:
            t.join(30)
        assert [i for i, _ in order] == [1, 2], f"waiters lost their order: {order}"
        assert token < order[0][1] < order[1][1]
    finally:
        for t in threads:
            t.join(5)
        for c in coords:
            c.stop()
        probe.close()
