"""One etcd lease per process (per coordinator), kept alive from a thread, whose loss is an event.

Theory of operation
-------------------
Every key a coordinator writes (held locks, queue entries, its member record) is attached to one lease.
A dead process stops refreshing it, etcd deletes the keys after ``lease_ttl``, and waiters move on.

The keepalive thread refreshes the lease every third of its TTL. Each successful refresh that was *sent* at
monotonic time ``t`` proves the lease lives until at least ``t + ttl`` on the server (etcd counts the TTL from
when it handles the refresh, which is after we sent it; a leader change only ever extends TTLs). So
``confirmed_until = t + ttl`` is a deadline the client can trust without asking etcd. When it passes without a
newer confirmation, or etcd answers that the lease is gone, the session is **lost**: open watches are aborted,
listeners run, then the ``lost`` event is set (so whoever waits on it sees the listeners' effects). Because
lock checks compare against ``confirmed_until`` directly, they turn False on time even if no thread runs.
A second thread sleeps until the deadline and declares the loss there, so listeners hear of it at the deadline
even while the keepalive thread is still inside a request to an unreachable member (the nemesis saw a listener
run 0.34 s after the deadline, after another client had taken the lock, when that thread alone did it).

What this does not guarantee: a process paused (SIGSTOP, GC, VM freeze) past its TTL cannot notice anything
until it runs again, and by then another process may hold its lock. Only the fencing token, checked by the
resource being written, stops that process's writes (see lockd.status).

The txn that announces the member also reads the cluster's lockd epoch (creating it on a fresh cluster): the
identity of this lifetime of the cluster's revisions, which a lock's fencing token is only comparable within
(see lockd.epoch).

``close()`` revokes the lease, so others get its locks at once. ``abandon()`` stops refreshing and lets the
lease run out, as a crashed process would (tests use it). Live sessions are closed at interpreter exit.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from lockd import epoch
from lockd.errors import BackendError
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, op_delete, op_put

LOG = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[Session] = weakref.WeakSet()


class Session:
    """A lease kept alive in the background, with a ``lost`` event the caller can wait on."""

    def __init__(self, client: EtcdClient, lease_ttl: float, member: str, deadline: float | None = None) -> None:
        """Grant the lease and announce the member; ``deadline`` (monotonic) bounds both, for a timed acquire.

        Raises:
            BackendError: etcd could not be reached (DeadlineExceeded: not before ``deadline``); nothing is left
                behind but, at worst, a lease that runs out within its TTL.
        """
        self.client = client
        self.member = member
        self.lost = threading.Event()
        self._ended = False  # lost or closed; ``lost`` is set after the listeners ran
        self._stop = threading.Event()
        self._listeners: list[Callable[[], None]] = []
        self._deferred: list[tuple[bytes, list[dict[str, Any]]]] = []  # (key, compares) still to delete
        self._mutex = threading.Lock()
        # A lease must be refreshed before it runs out; 1 s is etcd's floor anyway.
        sent = time.monotonic()
        self.lease_id, self.ttl = client.lease_grant(max(lease_ttl, 1.0), deadline=deadline)
        self.confirmed_until = sent + self.ttl
        self.started_at = time.time()
        self.epoch = ""  # the cluster's lockd epoch (lockd.epoch), learnt by _announce
        try:
            self._announce(deadline)
        except BackendError:
            try:
                self.client.lease_revoke(self.lease_id, deadline=deadline)
            except BackendError:
                pass  # unreachable again: the lease runs out by itself
            raise
        self._thread = threading.Thread(target=self._keep_alive, name=f"lockd-keepalive-{self.lease_id:x}", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch_deadline, name=f"lockd-deadline-{self.lease_id:x}", daemon=True).start()
        _LIVE.add(self)
        _install_exit_hooks()

    def _announce(self, deadline: float | None) -> None:
        """Write the member record the admin API lists (it lives and dies with the lease), and learn the
        cluster's epoch in the same txn, creating it on a cluster that has none (lockd.epoch)."""
        record = {
            "member": self.member,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at,
        }
        put = op_put(keys.member_key(self.member), json.dumps(record).encode(), self.lease_id)
        creation = epoch.Creation.new(self.member)
        result = self.client.txn(
            creation.compare, [*creation.success, put], [*creation.failure, put], urgent=True, deadline=deadline
        )
        self.epoch = creation.outcome(result)

    # -- state ----------------------------------------------------------------------------------------------

    def alive(self) -> bool:
        """True while the lease is confirmed on the server; turns False on time even without the thread."""
        if self._ended:
            return False
        if time.monotonic() >= self.confirmed_until:
            self._mark_lost("lease not confirmed before its TTL ran out")
            return False
        return True

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (in a session thread) when the session is lost; at once if it already is."""
        with self._mutex:
            if not self._ended:
                self._listeners.append(callback)
                return
        callback()

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self._mutex:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def delete_later(self, *items: tuple[bytes, list[dict[str, Any]]]) -> None:
        """Delete each key (only while its guard compares hold) at the next keepalive, retried until etcd answers.

        For cleanups after etcd just failed: a release or an abandoned acquire must not leave a key behind on a
        lease that stays alive, nor wait for etcd again now. A lost session keeps nothing: its keys go with it.
        """
        if self.alive():
            with self._mutex:
                self._deferred.extend(items)

    def delete(self, *items: tuple[bytes, list[dict[str, Any]]]) -> None:
        """Like delete_later, but try now (one request at most; whatever etcd does not take now waits).

        A lost session asks nothing: its keys went, or go, with its lease.
        """
        if not self.alive():
            return
        self.delete_later(*items)
        self._flush_deferred()

    # -- keepalive ------------------------------------------------------------------------------------------

    def _keep_alive(self) -> None:
        while not self._stop.is_set():
            refresh_at = self.confirmed_until - self.ttl * 2 / 3
            if self._stop.wait(max(0.0, refresh_at - time.monotonic())):
                return
            if not self._refresh():
                return
            self._flush_deferred()

    def _watch_deadline(self) -> None:
        """Sleep until the current deadline; a refresh meanwhile only moves it later, so wake and look again."""
        while not self._stop.wait(max(0.0, self.confirmed_until - time.monotonic())):
            if not self.alive():  # past the deadline: alive() declared the loss and ran the listeners
                return

    def _refresh(self) -> bool:
        """Refresh until confirmed or the deadline passes; False once the session is lost or stopped."""
        while not self._stop.is_set():
            left = self.confirmed_until - time.monotonic()
            if left <= 0:
                self._mark_lost("etcd did not confirm the lease before its TTL ran out")
                return False
            sent = time.monotonic()
            per_try = min(self.client.options.request_timeout, max(left / len(self.client.options.endpoints), 0.05))
            try:
                ttl = self.client.lease_keepalive(self.lease_id, timeout=per_try)
            except BackendError as exc:
                LOG.warning("lease %x keepalive failed (%.1fs left): %s", self.lease_id, left, exc)
                self._stop.wait(min(0.2, max(left, 0)))
                continue
            if ttl <= 0:
                self._mark_lost("etcd says the lease no longer exists")
                return False
            with self._mutex:
                if self._ended:  # declared lost while this answer was on its way: the loss stands
                    return False
                self.confirmed_until = sent + ttl
            return True
        return False

    def _flush_deferred(self) -> None:
        with self._mutex:
            pending, self._deferred = self._deferred, []
        for i, (key, guard) in enumerate(pending):
            try:
                self.client.txn(guard, [op_delete(key)], urgent=True)
            except BackendError:
                with self._mutex:
                    self._deferred.extend(pending[i:])
                return

    def lease_gone(self) -> None:
        """etcd refused a write on this session's lease as not found (revoked, or expired before the keepalive
        heard): the session is lost now, not at the next keepalive, so the caller's retry gets a new one."""
        self._mark_lost("etcd says the lease no longer exists")

    def _mark_lost(self, reason: str) -> None:
        with self._mutex:
            if self._ended:
                return
            self._ended = True  # from here alive() is False; ``lost`` is set once the listeners have run
            self.confirmed_until = min(self.confirmed_until, time.monotonic())  # confirmed no longer than this
            listeners, self._listeners = self._listeners, []
        LOG.error("lockd session lease %x lost: %s; its locks are no longer held", self.lease_id, reason)
        self._stop.set()
        self.client.close_watches()
        for callback in listeners:
            try:
                callback()
            except Exception:  # a listener's bug must not stop the others from hearing of the loss
                LOG.exception("lease-loss listener failed")
        self.lost.set()
        # If etcd still has the lease (it was unreachable, not dead), revoke it so others need not wait.
        threading.Thread(target=self._revoke_quietly, daemon=True).start()

    def _revoke_quietly(self) -> None:
        try:
            self.client.lease_revoke(self.lease_id, timeout=min(1.0, self.client.options.request_timeout))
        except BackendError:
            pass

    # -- ending ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop refreshing and revoke the lease: every key on it (locks, queue entries) goes at once."""
        self._stop.set()
        _LIVE.discard(self)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.client.options.request_timeout)
        with self._mutex:
            ending, self._ended = not self._ended, True
            self._listeners = []
        if ending:
            self.lost.set()
            try:
                self.client.lease_revoke(self.lease_id)
            except BackendError as exc:
                LOG.warning("could not revoke lease %x (it expires in %.0fs): %s", self.lease_id, self.ttl, exc)

    def abandon(self) -> None:
        """Stop refreshing without revoking, as a crashed process would: the lease runs out on the server."""
        self._stop.set()
        _LIVE.discard(self)


def _close_all() -> None:
    for session in list(_LIVE):
        session.close()


_hooks_installed = False


def _install_exit_hooks() -> None:
    """Close sessions at interpreter exit, and make a default SIGTERM exit through atexit too.

    Python's default SIGTERM kills the process without running atexit, which would leave locks held for
    a full TTL after `systemctl stop`. A handler the application installed itself is left alone.
    """
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_close_all)
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _exit_on_sigterm)
        except ValueError:
            pass


def _exit_on_sigterm(signum: int, frame: object) -> None:
    _close_all()
    raise SystemExit(128 + signum)
