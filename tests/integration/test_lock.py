"""The lockd lock protocol on a real etcd: exclusion, tokens, FIFO, timeouts, leases, crashes, lease loss."""

from __future__ import annotations

import queue
import signal
import threading
import time

import pytest
import tooz.coordination
from tooz.locking import Lock

from lockd.errors import BackendError, BackendTimeout
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.force_break import break_lock
from lockd.options import parse_backend_url
from tests.etcd_process import queue_entries
from tests.procs import WorkerProcess, wait_for

pytestmark = pytest.mark.both_etcd


def etcd_client(url: str) -> EtcdClient:
    return EtcdClient(parse_backend_url(url))


def hand_over_through_the_queue(etcd_url: str, lock_name: str, first: Lock, second: Lock) -> None:
    """``first`` takes the lock; ``second`` queues behind it and gets it when ``first`` releases. ``second`` then
    holds through the queue: its queue entry stays until it releases."""
    assert first.acquire()
    got: list[bool] = []
    waiting = threading.Thread(target=lambda: got.append(second.acquire(blocking=30)))
    waiting.start()
    wait_for(lambda: len(queue_entries(etcd_url, lock_name)) == 1, 10, "the second lock to queue")
    first.release()
    waiting.join(30)
    assert got == [True]


def test_second_lock_object_is_excluded_and_gets_a_larger_token(coordinator, lock_name) -> None:
    first, second = coordinator.get_lock(lock_name), coordinator.get_lock(lock_name)
    assert first.acquire()
    assert not second.acquire(blocking=False)
    assert not second.acquire(blocking=0.2)
    token = first.token
    assert first.release()
    assert second.acquire(blocking=False)
    assert second.token > token
    assert second.release()


def test_tokens_strictly_increase_across_acquisitions(coordinator, lock_name) -> None:
    lock = coordinator.get_lock(lock_name)
    tokens = []
    for _ in range(5):
        assert lock.acquire()
        tokens.append(lock.token)
        lock.release()
    assert tokens == sorted(set(tokens))


def test_release_of_a_lock_not_held_returns_false(coordinator, lock_name) -> None:
    assert coordinator.get_lock(lock_name).release() is False


def test_reacquire_by_the_same_object_answers_false(coordinator, lock_name) -> None:
    """tooz's contract: False (not an error, not a deadlock) when the object already holds the lock."""
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    token = lock.token
    assert lock.acquire(blocking=False) is False
    assert lock.acquire(blocking=True) is False  # the same thread would wait for itself forever
    assert lock.acquire(blocking=0.2) is False
    assert lock.token == token and lock.acquired
    assert lock.release() is True
    assert lock.release() is False


def test_a_lock_object_shared_by_threads_is_a_mutex_among_them(coordinator, lock_name) -> None:
    """Another thread's acquire on a held object waits for its release in-process, then takes it in etcd."""
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    first = lock.token
    got: list[tuple[bool, int | None]] = []
    waiter = threading.Thread(target=lambda: got.append((lock.acquire(), lock.token)))
    waiter.start()
    other = threading.Thread(target=lambda: got.append((lock.acquire(blocking=False), None)))
    other.start()
    other.join(10)
    assert got == [(False, None)]  # a non-blocking try from a third thread does not wait
    waiter.join(0.3)
    assert waiter.is_alive(), "the waiting thread must not get a lock the object still holds"
    assert queue_entries(coordinator.etcd, lock_name) == []  # it waits in-process, not in etcd's queue
    assert lock.release()
    waiter.join(10)
    assert not waiter.is_alive()
    assert got[1][0] is True and got[1][1] > first
    assert lock.release()


def test_the_same_thread_may_take_again_a_lock_it_lost(coordinator, lock_name) -> None:
    """As with stock tooz, a holder whose lease ran out can acquire again without release() first."""
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    lost = lock.token
    coordinator.etcd.lease_revoke(lock.session.lease_id)
    wait_for(lambda: not lock.acquired, 10, "the session to notice its revoked lease")
    assert lock.token == lost  # kept until release or a new acquisition
    assert lock.acquire(blocking=5)
    assert lock.token > lost and lock.acquired
    assert lock.release()


def test_waiters_are_served_in_arrival_order(coordinator, etcd_url, lock_name) -> None:
    holder = coordinator.get_lock(lock_name)
    assert holder.acquire()
    order: list[int] = []
    threads = []
    for i in range(5):
        lock = coordinator.get_lock(lock_name)

        def wait(i: int = i, lock=lock) -> None:
            assert lock.acquire(blocking=30)
            order.append(i)
            lock.release()

        t = threading.Thread(target=wait)
        t.start()
        threads.append(t)
        # the next waiter starts only once this one is queued, so arrival order is known
        wait_for(lambda i=i: len(queue_entries(etcd_url, lock_name)) == i + 1, 10, f"waiter {i} to queue")
    holder.release()
    for t in threads:
        t.join(30)
    assert order == [0, 1, 2, 3, 4]


def test_releasing_worker_that_asks_again_goes_behind_waiters(coordinator, etcd_url, lock_name) -> None:
    a, b = coordinator.get_lock(lock_name), coordinator.get_lock(lock_name)
    assert a.acquire()
    got: list[str] = []
    t = threading.Thread(target=lambda: (b.acquire(blocking=30), got.append("b"), b.release()))
    t.start()
    wait_for(lambda: len(queue_entries(etcd_url, lock_name)) == 1, 10, "the waiter to queue")
    a.release()
    assert a.acquire(blocking=30)
    got.append("a")
    a.release()
    t.join(30)
    assert got == ["b", "a"]


def test_timed_out_wait_leaves_no_queue_entry(coordinator, etcd_url, lock_name) -> None:
    holder, waiter = coordinator.get_lock(lock_name), coordinator.get_lock(lock_name)
    assert holder.acquire()
    assert waiter.acquire(blocking=0.3) is False
    assert waiter.acquire(blocking=False) is False
    assert len(queue_entries(etcd_url, lock_name)) == 0
    holder.release()


def test_one_lease_per_coordinator_however_many_acquisitions(coordinator, etcd_url, lock_name) -> None:
    client = etcd_client(etcd_url)
    lock, other = coordinator.get_lock(lock_name), coordinator.get_lock(lock_name)
    assert lock.acquire()
    before = set(client.leases())
    for _ in range(3):
        other.acquire(blocking=0.05)  # failed attempts
    lock.release()
    for _ in range(50):
        lock.acquire()
        lock.release()
    assert set(client.leases()) - before == set()
    assert coordinator.session().lease_id in before


def test_stop_releases_locks_and_revokes_the_lease(etcd_url, lock_name) -> None:
    coord = tooz.coordination.get_coordinator(etcd_url, b"stopper")
    coord.start()
    lock = coord.get_lock(lock_name)
    assert lock.acquire()
    lease = lock.session.lease_id
    coord.stop()
    client = etcd_client(etcd_url)
    assert client.get(keys.lock_key(lock_name)) is None
    assert lease not in client.leases()


def test_sigterm_of_holder_frees_the_lock_at_once(etcd_url, lock_name) -> None:
    """Python's default SIGTERM skips atexit; lockd installs a handler so the lease is revoked on the way out."""
    worker = WorkerProcess(etcd_url, lock_name, "hold")
    assert worker.wait_event("acquired", "not-acquired")["event"] == "acquired"
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(30)
    assert etcd_client(etcd_url).get(keys.lock_key(lock_name)) is None


def test_sigkilled_holder_frees_the_lock_after_its_lease(coordinator, etcd_url, lock_name) -> None:
    worker = WorkerProcess(etcd_url, lock_name, "hold")
    assert worker.wait_event("acquired", "not-acquired")["event"] == "acquired"
    lock = coordinator.get_lock(lock_name)
    assert not lock.acquire(blocking=False)
    worker.stop()
    # lease_ttl is 3 s in etcd_url; the wait bound is generous (TTL + election + slack), not a speed target
    assert lock.acquire(blocking=15)
    lock.release()


def test_lease_lost_while_held_is_noticed(coordinator, etcd_url, lock_name) -> None:
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    fired = threading.Event()
    lock.on_lost(fired.set)
    etcd_client(etcd_url).lease_revoke(lock.session.lease_id)
    assert lock.is_still_owner() is False
    assert fired.wait(10), "lease-loss listener did not fire"
    assert lock.session.lost.is_set()
    token = lock.token
    assert token is not None and lock.acquired is False  # the token of the lost acquisition stays for fencing
    assert lock.release() is False
    assert lock.token is None
    # the next acquire starts a new session
    again = coordinator.get_lock(lock_name)
    assert again.acquire(blocking=5)
    again.release()


def test_unreachable_etcd_raises_a_tooz_connection_error() -> None:
    from tests.etcd_process import free_port

    coord = tooz.coordination.get_coordinator(f"lockd+etcd3+http://127.0.0.1:{free_port()}?timeout=0.5", b"nobody")
    with pytest.raises(tooz.coordination.ToozConnectionError):
        coord.start()
    with pytest.raises(BackendError):
        coord.start()


def test_bad_names_are_value_errors(coordinator) -> None:
    for name in ["", "x" * 513, "vol-é", "a\nb"]:
        with pytest.raises(ValueError):
            coordinator.get_lock(name)


def test_a_lock_broken_by_an_operator_is_no_longer_owned(coordinator, etcd_url, lock_name) -> None:
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    etcd_client(etcd_url).delete(keys.lock_key(lock_name))
    assert lock.is_still_owner() is False
    assert lock.release() is False


def test_unique_member_keys_live_on_the_session_lease(coordinator, etcd_url) -> None:
    member = coordinator._member_id.decode()
    kv = etcd_client(etcd_url).get(keys.member_key(member))
    assert kv is not None and kv.lease == coordinator.session().lease_id


def test_group_membership_rides_on_the_session_lease(coordinator, etcd_url, lock_name) -> None:
    """tooz groups come from the stock driver, but must not grant a second lease per process."""
    group = lock_name.encode()
    coordinator.create_group(group).get()
    coordinator.join_group(group, b"caps").get()
    assert coordinator.get_members(group).get() == {coordinator._member_id}
    member_key = b"tooz/groups/" + group + b"/" + coordinator._member_id
    kv = etcd_client(etcd_url).get(member_key)
    assert kv is not None and kv.lease == coordinator.session().lease_id
    coordinator.leave_group(group).get()


def test_lost_callbacks_are_dropped_at_release(coordinator, lock_name) -> None:
    """A long-running process registers a callback per acquisition; release must not leave them behind."""
    lock = coordinator.get_lock(lock_name)
    for _ in range(20):
        assert lock.acquire()
        lock.on_lost(lambda: None)
        lock.release()
    assert coordinator.session()._listeners == []


def test_an_endpoint_that_is_not_etcds_gateway_is_a_backend_error() -> None:
    """A plain HTTP server answering 404 pages (etcd without its JSON gateway) must not leak a JSONDecodeError."""
    import http.server

    class NotEtcd(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(404)
            self.send_header("Content-Length", "18")
            self.end_headers()
            self.wfile.write(b"404 page not found")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotEtcd)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"lockd+etcd3+http://127.0.0.1:{server.server_address[1]}?timeout=2"
        with pytest.raises(BackendError, match="JSON gateway"):
            etcd_client(url).lease_grant(5)
    finally:
        server.shutdown()


def test_holder_that_exits_without_stop_frees_the_lock_at_exit(etcd_url, lock_name) -> None:
    """A program that forgets coordinator.stop(): the atexit hook revokes the lease, no TTL wait for others."""
    worker = WorkerProcess(etcd_url, lock_name, "hold", exit_holding=True)
    assert worker.wait_event("acquired", "not-acquired")["event"] == "acquired"
    worker.finish()
    assert worker.proc.wait(30) == 0
    assert etcd_client(etcd_url).get(keys.lock_key(lock_name)) is None


def test_breaking_a_hung_holder_that_came_through_the_queue_wakes_the_next_waiter(
    coordinator, etcd_url, lock_name
) -> None:
    """A holder that waited keeps its queue entry, which its successor watches: a break must free both."""
    first, hung, next_in_line = (coordinator.get_lock(lock_name) for _ in range(3))
    hand_over_through_the_queue(etcd_url, lock_name, first, hung)  # `hung` holds: its entry is still there
    assert len(queue_entries(etcd_url, lock_name)) == 1
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(next_in_line.acquire(blocking=30)))
    waiter.start()
    wait_for(lambda: len(queue_entries(etcd_url, lock_name)) == 2, 10, "the third lock to queue")
    assert coordinator.get_lock(lock_name).break_()
    waiter.join(30)
    assert result == [True]
    assert hung.is_still_owner() is False
    assert hung.release() is False
    next_in_line.release()
    assert len(queue_entries(etcd_url, lock_name)) == 0


def test_release_removes_the_holders_queue_entry(coordinator, etcd_url, lock_name) -> None:
    first, second = coordinator.get_lock(lock_name), coordinator.get_lock(lock_name)
    hand_over_through_the_queue(etcd_url, lock_name, first, second)
    assert second.token is not None
    assert second.release()
    assert len(queue_entries(etcd_url, lock_name)) == 0


def test_a_stopped_coordinator_starts_again_and_locks(coordinator, lock_name) -> None:
    """tooz lets a coordinator stop and start again; lockd opens a new etcd client and session for it."""
    first = coordinator.session().lease_id
    coordinator.stop()
    coordinator.start(start_heart=True)
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire(blocking=False)
    assert lock.session.lease_id != first
    assert lock.release()


def test_a_release_grants_the_lock_to_the_next_waiter_in_one_commit(coordinator, etcd_url, lock_name) -> None:
    """A holder that came through the queue hands the lock to the next lockd waiter in its release txn: the lock
    key is not deleted and created again (its create_revision stays), and it comes to name the successor at the
    release's own revision, which is the successor's token (its mod_revision). That the successor then sends no
    take txn is a matter of the events' timing, so the benchmark shows it (bench/handoff_breakdown.py), not this."""
    first, second, third = (coordinator.get_lock(lock_name) for _ in range(3))
    assert first.acquire()
    turns = {"second": threading.Event(), "third": threading.Event()}
    done = {"second": threading.Event(), "third": threading.Event()}
    tokens: dict[str, int] = {}

    def wait(label: str, lock) -> None:
        assert lock.acquire(blocking=30)
        tokens[label] = lock.token
        turns[label].set()
        done[label].wait(30)
        lock.release()

    threads = [
        threading.Thread(target=wait, args=(label, lock)) for label, lock in (("second", second), ("third", third))
    ]
    for i, t in enumerate(threads):
        t.start()
        wait_for(lambda i=i: len(queue_entries(etcd_url, lock_name)) == i + 1, 10, "the waiters to queue")
    first.release()  # the first holder took a free lock at once: it releases by deleting the key
    assert turns["second"].wait(30)
    client = EtcdClient(parse_backend_url(etcd_url))
    try:
        held_by_second = client.get(keys.lock_key(lock_name))
        done["second"].set()  # the second came through the queue: its release grants the lock to the third
        assert turns["third"].wait(30)
        held_by_third = client.get(keys.lock_key(lock_name))
    finally:
        client.close()
        done["third"].set()
        for t in threads:
            t.join(30)
    assert held_by_second.mod_revision == tokens["second"]
    assert held_by_third.create_revision == held_by_second.create_revision, "the lock key was deleted in between"
    assert tokens["third"] == held_by_third.mod_revision > tokens["second"]


def _txns_by_thread(monkeypatch) -> dict[int, list[list]]:
    """Every txn each thread sends, as its list of success operations (reads only: a read)."""
    sent: dict[int, list[list]] = {}
    real = EtcdClient.txn

    def txn(self, compare, success, failure=(), **kwargs):
        sent.setdefault(threading.get_ident(), []).append(list(success))
        return real(self, compare, success, failure, **kwargs)

    monkeypatch.setattr(EtcdClient, "txn", txn)
    return sent


def test_a_waiter_reads_nothing_when_nothing_changed_after_it_queued(
    coordinator, etcd_url, lock_name, monkeypatch
) -> None:
    """A waiter's watches start after its enqueue txn's revision when nothing was written in between (etcd says
    where each watch began), so it sends its enqueue (after the lean try of a name it has not queued for) and no
    read of both keys until its turn."""
    holder, waiter = coordinator.get_lock(lock_name), coordinator.get_lock(lock_name)
    warm = coordinator.get_lock(lock_name + "-warm")  # the session and the watch stream exist before we count
    assert warm.acquire()
    warm.release()
    assert holder.acquire()
    sent = _txns_by_thread(monkeypatch)
    held = threading.Event()
    me: list[int] = []

    def wait() -> None:
        me.append(threading.get_ident())
        assert waiter.acquire(blocking=30)
        held.set()

    thread = threading.Thread(target=wait)
    thread.start()
    wait_for(lambda: len(queue_entries(etcd_url, lock_name)) == 1, 10, "the waiter to queue")
    time.sleep(0.3)  # time for a read, had the waiter sent one
    txns_while_waiting = list(sent.get(me[0], []))
    # the holder took the lock free, so it releases by deleting: the waiter takes (a txn after the wait)
    holder.release()
    assert held.wait(30)
    thread.join(30)
    waiter.release()
    reads = [ops for ops in txns_while_waiting if all("request_range" in op for op in ops)]
    assert txns_while_waiting and not reads, f"the waiter read while it waited: {txns_while_waiting}"


def test_a_release_between_queueing_and_watching_is_not_missed(coordinator, etcd_url, lock_name, monkeypatch) -> None:
    """The holder releases after the waiter's enqueue txn and before its watches begin: the watches start after
    the delete, so only the read that a later start revision calls for tells the waiter its turn came."""
    holder, waiter = coordinator.get_lock(lock_name), coordinator.get_lock(lock_name)
    assert holder.acquire()
    real = EtcdClient.watch
    released: list[bool] = []

    def watch(self, key, *args, **kwargs):
        if not released:
            released.append(holder.release())
        return real(self, key, *args, **kwargs)

    monkeypatch.setattr(EtcdClient, "watch", watch)
    assert waiter.acquire(blocking=10), "the waiter missed the release that came before its watches"
    assert released == [True]
    waiter.release()


def test_a_grant_whose_mark_comes_late_is_read_not_taken(coordinator, etcd_url, lock_name, monkeypatch) -> None:
    """etcd now and then registers a watch from now in its unsynced group (a write landed between its reading of
    the revision and the registration), and then delivers that watch's events up to 100 ms late. Here the
    waiter's watch on its own entry hears nothing at all: after the delete of the entry ahead and a short grace,
    one read of its entry shows the grant, and the waiter holds at the grant's revision without a take txn."""
    first, second, third = (coordinator.get_lock(lock_name) for _ in range(3))
    hand_over_through_the_queue(etcd_url, lock_name, first, second)  # second holds through the queue: it grants
    real = EtcdClient.watch
    deaf: list[int] = []

    def watch(self, key, *args, filters=(), inbox=None, **kwargs):
        if threading.get_ident() in deaf and tuple(filters) == ("NODELETE",):
            inbox = queue.SimpleQueue()  # the grant mark's event goes nowhere the waiter looks
        return real(self, key, *args, filters=filters, inbox=inbox, **kwargs)

    monkeypatch.setattr(EtcdClient, "watch", watch)
    sent = _txns_by_thread(monkeypatch)
    got: list[bool] = []

    def wait() -> None:
        deaf.append(threading.get_ident())
        got.append(third.acquire(blocking=30))

    thread = threading.Thread(target=wait)
    thread.start()
    wait_for(lambda: len(queue_entries(etcd_url, lock_name)) == 2, 10, "the third lock to queue")
    assert second.release()
    thread.join(30)
    assert got == [True]
    held, token = etcd_client_get(etcd_url, keys.lock_key(lock_name)), third.token
    writes = [ops for ops in sent[deaf[0]] if any("request_put" in op for op in ops)]  # a read of both keys may be
    third.release()
    assert held.mod_revision == token, "the waiter's token is not the grant's revision"
    assert len(writes) == 1, f"the waiter sent {len(writes)} txns that write (a take after the grant): {writes}"


def test_a_break_at_another_token_frees_nothing(coordinator, etcd_url, lock_name) -> None:
    """A break decided on an old view (lockd serve's automatic deadlock break) names the token it saw: if the
    lock changed hands since, the new holder keeps it."""
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    client = etcd_client(etcd_url)
    try:
        assert break_lock(client, lock_name, "test", token=lock.token - 1) is None
        assert lock.is_still_owner()
        assert break_lock(client, lock_name, "test", token=lock.token) is not None
        assert not lock.is_still_owner()
    finally:
        client.close()
    assert lock.release() is False


def test_a_release_whose_queue_read_fails_ends_there(coordinator, etcd_url, lock_name, monkeypatch) -> None:
    """A holder that came through the queue and knows no successor reads the queue before it releases. When etcd
    does not answer that read (every member tried), the release raises at once and leaves the key to the session,
    instead of waiting as long again on a delete: a release makes at most one request that waits on every member
    (the nemesis's bound for a release). The session deletes the key as soon as etcd answers."""
    first, second = coordinator.get_lock(lock_name), coordinator.get_lock(lock_name)
    hand_over_through_the_queue(etcd_url, lock_name, first, second)
    sent = _txns_by_thread(monkeypatch)
    real_range = EtcdClient.range

    def unanswered(self, *args, **kwargs):
        raise BackendTimeout("etcd did not answer (injected)")

    monkeypatch.setattr(EtcdClient, "range", unanswered)
    with pytest.raises(BackendError):
        second.release()
    assert sent.get(threading.get_ident(), []) == [], "a delete was sent after the read had failed"
    monkeypatch.setattr(EtcdClient, "range", real_range)
    wait_for(lambda: etcd_client_get(etcd_url, keys.lock_key(lock_name)) is None, 10, "the session to delete the key")


def etcd_client_get(url: str, key: bytes):
    client = etcd_client(url)
    try:
        return client.get(key)
    finally:
        client.close()
