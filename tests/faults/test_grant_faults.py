"""Faults around a grant: the release that hands the lock to the next lockd waiter in its own txn (lockd.lock).

Each test builds the same scene on the session etcd: a holder that came through the queue (so its release
grants) and a lockd waiter queued behind it, then breaks one thing at the moment of the grant:

- the grant's answer is lost and the txn repeated (through a proxy that lets the txn commit and drops etcd's
  answer): the repeat fails its compare, reads the lock key naming the successor, and the release is True,
  not False; the successor holds once, at the grant's revision;
- a force-break lands first: the grant's compare fails, the release is False, and the successor takes the
  freed lock itself;
- the successor's session is lost just before the grant: nobody is granted a lock on a dead lease, the lock is
  freed, and the successor (queueing again on a new session) gets it;
- the successor's watch stream breaks as the grant lands: it re-checks, finds the lock key naming it, and
  holds at the grant's revision (no second grant, no lost grant);
- the releaser is SIGKILLed with its grant sent and unanswered: the grant stands (or, had it not landed, the
  releaser's lease would free the lock); the successor holds either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import tooz.coordination

from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, b64
from lockd.force_break import break_lock
from tests.etcd_process import EtcdMember, queue_entries
from tests.faults.lossy_proxy import LossyProxy
from tests.procs import WorkerProcess, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.both_etcd]

Starter = Callable[[str], tooz.coordination.CoordinationDriver]


def _direct(etcd: EtcdMember) -> str:
    return f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=3&timeout=1"


class Scene:
    """``holder`` holds the lock having come through the queue; ``successor`` is queued behind it."""

    def __init__(self, start: Starter, direct: EtcdClient, name: str, holder_url: str, successor_url: str) -> None:
        self.direct, self.name = direct, name
        first = start(successor_url).get_lock(name.encode())
        assert first.acquire(blocking=False)
        self.holder = start(holder_url).get_lock(name.encode())
        taking = threading.Thread(target=self.holder.acquire)
        taking.start()
        wait_for(lambda: len(queue_entries(direct, name)) == 1, 10, "the holder to queue")
        assert first.release()
        taking.join(10)
        assert self.holder.acquired
        self.successor_coord = start(successor_url)
        self.successor = self.successor_coord.get_lock(name.encode())
        self.got: list[bool] = []
        self.waiting = threading.Thread(target=lambda: self.got.append(self.successor.acquire(blocking=30)))
        self.waiting.start()
        wait_for(lambda: len(queue_entries(direct, name)) == 2, 10, "the successor to queue")

    def successor_holds(self) -> int:
        """The successor's token, once it holds; the lock key names it at exactly that revision."""
        self.waiting.join(30)
        assert self.got == [True]
        kv = self.direct.get(keys.lock_key(self.name))
        assert kv is not None and kv.mod_revision == self.successor.token
        assert self.successor.is_still_owner()
        return self.successor.token

    def key(self):  # noqa: ANN201 - a KeyValue or None
        return self.direct.get(keys.lock_key(self.name))


@pytest.mark.parametrize("mode", ["hang", "reset"])
def test_lost_answer_to_a_grant_is_still_a_release(
    etcd: EtcdMember, proxy: LossyProxy, direct: EtcdClient, lock_name: str, mode: str, coordinator_via: Starter
) -> None:
    via_proxy = f"lockd+etcd3+http://{proxy.endpoint}?endpoints={etcd.endpoint}&lease_ttl=3&timeout=1"
    scene = Scene(coordinator_via, direct, lock_name, via_proxy, _direct(etcd))
    before = scene.key()
    proxy.lose_next("kv/txn", b64(keys.lock_key(lock_name)).encode(), mode)
    assert scene.holder.release() is True, "the repeated grant did not recognise its own landed txn"
    granted_at = proxy.lost_txn_revision()
    assert scene.successor_holds() == granted_at
    assert scene.key().create_revision == before.create_revision, "granted, not freed and taken again"
    assert scene.successor.release()


def test_grant_after_a_force_break_is_refused_and_the_successor_takes(
    etcd: EtcdMember, direct: EtcdClient, lock_name: str, coordinator_via: Starter
) -> None:
    scene = Scene(coordinator_via, direct, lock_name, _direct(etcd), _direct(etcd))
    broken = scene.key()
    assert break_lock(direct, lock_name, "test") is not None
    assert scene.holder.release() is False
    token = scene.successor_holds()
    assert token > broken.mod_revision
    assert scene.key().create_revision == token, "the successor took the freed lock itself"
    assert scene.successor.release()


def test_successor_session_lost_just_before_the_grant(
    etcd: EtcdMember, direct: EtcdClient, lock_name: str, coordinator_via: Starter
) -> None:
    scene = Scene(coordinator_via, direct, lock_name, _direct(etcd), _direct(etcd))
    mine = scene.holder._mutex._queue_key  # noqa: SLF001 - the holder's own entry
    waiting = direct.get(next(k for k in queue_entries(direct, lock_name) if k != mine))
    direct.lease_revoke(waiting.lease)  # the successor's entry goes with its lease, before the holder reads
    assert scene.holder.release() is True
    token = scene.successor_holds()  # it queued again on a new session, found the lock free and took it
    assert scene.key().lease != waiting.lease
    assert scene.key().create_revision == token
    assert scene.successor.release()


def test_successor_watch_broken_as_the_grant_lands(
    etcd: EtcdMember, direct: EtcdClient, lock_name: str, coordinator_via: Starter
) -> None:
    scene = Scene(coordinator_via, direct, lock_name, _direct(etcd), _direct(etcd))
    before = scene.key()
    client = scene.successor_coord.session().client
    client.close_watches()  # the successor re-checks and watches again, racing the grant below
    assert scene.holder.release() is True
    token = scene.successor_holds()
    assert scene.key().create_revision == before.create_revision
    assert token > before.mod_revision
    assert scene.successor.release()


def test_releaser_killed_with_its_grant_unanswered(
    etcd: EtcdMember, proxy: LossyProxy, direct: EtcdClient, lock_name: str, coordinator_via: Starter
) -> None:
    """The holder is a process of its own, talking through a proxy that sends its grant on and holds the answer;
    it is SIGKILLed while it waits for that answer."""
    via_proxy = f"lockd+etcd3+http://{proxy.endpoint}?lease_ttl=3&timeout=5"
    first = coordinator_via(_direct(etcd)).get_lock(lock_name.encode())
    assert first.acquire(blocking=False)
    holder = WorkerProcess(via_proxy, lock_name, "hold")
    try:
        wait_for(lambda: len(queue_entries(direct, lock_name)) == 1, 10, "the holder to queue")
        assert first.release()
        holder.wait_event("acquired", timeout=10)
        successor = coordinator_via(_direct(etcd)).get_lock(lock_name.encode())
        got: list[bool] = []
        waiting = threading.Thread(target=lambda: got.append(successor.acquire(blocking=30)))
        waiting.start()
        wait_for(lambda: len(queue_entries(direct, lock_name)) == 2, 10, "the successor to queue")
        proxy.stall_next("kv/txn", b64(keys.lock_key(lock_name)).encode(), 10)
        holder.finish()  # stdin closed: the worker releases, and its grant's answer is held by the proxy
        waiting.join(8)  # the grant committed: the successor holds while the releaser still waits for the answer
        holder.proc.kill()
        waiting.join(30)
        assert got == [True]
        kv = direct.get(keys.lock_key(lock_name))
        assert kv is not None and kv.mod_revision == successor.token
        time.sleep(4)  # past the dead releaser's lease: the granted lock is on the successor's own lease
        assert successor.is_still_owner()
        assert successor.release()
    finally:
        holder.stop()
