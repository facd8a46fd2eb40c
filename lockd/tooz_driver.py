"""Glue that makes the lockd protocol a tooz backend: ``lockd+etcd3+http://`` in ``tooz.backends``.

Groups and membership come from tooz's own etcd3gw driver, but on lockd's session lease instead of a
second membership lease, so a process has exactly one lease however many locks it takes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.parse
from typing import Any

import tooz
from etcd3gw import lease as etcd3gw_lease
from tooz import locking
from tooz.drivers.etcd3gw import Etcd3Driver

from lockd.errors import BackendError, DeadlineExceeded, SessionExpired
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.force_break import break_lock
from lockd.lock import Mutex
from lockd.options import OPTION_HELP, BackendOptions, parse_backend_url
from lockd.session import Session

LOG = logging.getLogger(__name__)


class LockdLock(locking.Lock):
    """A tooz lock with a fencing ``token``, FIFO waits and lease-loss awareness."""

    def __init__(self, driver: LockdDriver, name: str | bytes) -> None:
        self._mutex = Mutex(
            name if isinstance(name, str) else name.decode("ascii", "replace"), driver.session, driver.member
        )
        super().__init__(name if isinstance(name, bytes) else name.encode("ascii"))
        self._driver = driver
        self._lost_callbacks: list[tuple[Session, Any]] = []

    @property
    def token(self) -> int | None:
        """The fencing token of the latest acquisition (the etcd revision at which the lock key came to name this
        holder: its mod_revision), kept after the lock is lost and cleared by ``release()``: a holder that lost its
        lease and writes with ``fence=lock.token`` is refused, never unfenced. ``acquired`` says whether it is
        still held."""
        return self._mutex.token

    @property
    def epoch(self) -> str | None:
        """The etcd cluster lifetime ``token`` belongs to (lockd.epoch): stores compare tokens only within one."""
        session = self._mutex.session
        return session.epoch if session is not None and self._mutex.token is not None else None

    @property
    def key(self) -> bytes:
        """The etcd key this lock holds (``/tooz/locks`` + name): fencing compares its mod_revision."""
        return self._mutex.key

    @property
    def acquired(self) -> bool:
        return self._mutex.held()

    @property
    def session(self) -> Session | None:
        return self._mutex.session

    def acquire(self, blocking: bool | float = True, shared: bool = False, timeout: Any = None) -> bool:
        """Returns True when held, False when ``blocking`` ran out; ``timeout`` (tooz's lease TTL) is ignored:
        lockd locks live on the session lease (``lease_ttl``)."""
        if shared:
            raise tooz.NotImplemented("lockd locks are exclusive")
        ok = self._mutex.acquire(blocking)
        if ok:
            self._driver._held.add(self)
        return ok

    def release(self) -> bool:
        self._driver._held.discard(self)
        for session, callback in self._lost_callbacks:
            session.remove_listener(callback)
        self._lost_callbacks.clear()
        return self._mutex.release()

    def is_still_owner(self) -> bool:
        return self._mutex.is_still_owner()

    def break_(self) -> bool:
        """Free the lock whoever holds it, audited as ``lockd break`` is; False when it was not held."""
        self._driver._held.discard(self)
        return break_lock(self._driver.etcd, self._mutex.name, f"tooz break_() by {self._driver.member}") is not None

    def on_lost(self, callback: Any) -> None:
        """Call ``callback()`` if this lock's session lease is lost while it is held (not after release)."""
        session = self._mutex.session
        if session is None or self._mutex.token is None:
            raise tooz.ToozError("lock is not held")
        session.add_listener(callback)
        self._lost_callbacks.append((session, callback))


class LockdDriver(Etcd3Driver):
    __doc__ = (
        "lockd locks on etcd v3 through its JSON gateway: fenced, FIFO, lease-loss aware.\n\n"
        "URL: ``lockd+etcd3+http://HOST:PORT[?OPTION=VALUE&...]`` (or ``lockd+etcd3+https``).\n\n"
        "Options:\n\n" + "\n".join(f"- ``{k}``: {v}" for k, v in OPTION_HELP.items())
    )

    CHARACTERISTICS = Etcd3Driver.CHARACTERISTICS

    def __init__(self, member_id: bytes | str, parsed_url: Any, options: dict[str, Any]) -> None:
        url = urllib.parse.urlunsplit(parsed_url)
        # tooz merged URL query and keyword options into ``options`` already; parse both from it.
        self.options: BackendOptions = parse_backend_url(url.split("?", 1)[0], options)
        stock_options = {"timeout": [str(max(1, math.ceil(self.options.request_timeout)))]}
        for name in ("ca_cert", "cert_cert", "cert_key"):
            if getattr(self.options, name):
                stock_options[name] = [getattr(self.options, name)]
        super().__init__(member_id, parsed_url, stock_options)
        self.member = member_id.decode() if isinstance(member_id, bytes) else str(member_id)
        self.etcd = EtcdClient(self.options)
        self._session: Session | None = None
        self._session_lock = threading.Lock()
        self._held: set[LockdLock] = set()

    # tooz's etcd3gw driver keeps a membership lease of its own; point it at the session lease instead.
    @property
    def _membership_lease(self) -> etcd3gw_lease.Lease | None:
        session = self._session
        if session is None:
            return None
        return etcd3gw_lease.Lease(session.lease_id, client=self.client)

    @_membership_lease.setter
    def _membership_lease(self, value: Any) -> None:
        pass

    def session(self, deadline: float | None = None) -> Session:
        """The live session, starting a new one if there is none or the last one was lost.

        ``deadline`` (monotonic): a timed acquire's; a new session's requests are not sent after it.
        Raises:
            BackendError (a tooz.ToozConnectionError): etcd could not grant a lease (DeadlineExceeded: in time).
        """
        session = self._session
        if session is not None and session.alive():
            return session
        # Another thread (tooz's heartbeat, another waiter) may be starting one while etcd is unreachable, which
        # can take every member's timeout: wait for it only until our own deadline.
        if deadline is None:
            self._session_lock.acquire()
        elif not self._session_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise DeadlineExceeded("the caller's deadline passed while another thread was starting a lockd session")
        try:
            session = self._session
            if session is None or not session.alive():
                if session is not None:
                    LOG.warning("starting a new lockd session after lease %x was lost", session.lease_id)
                session = self._session = Session(self.etcd, self.options.lease_ttl, self.member, deadline)
            return session
        finally:
            self._session_lock.release()

    def _start(self) -> None:
        if self.etcd.closed:  # started again after stop(), as tooz allows
            self.etcd = EtcdClient(self.options)
        self.session()

    def _stop(self) -> None:
        for lock in list(self._held):
            try:
                lock.release()
            except BackendError:
                pass
        session, self._session = self._session, None
        if session is not None:
            session.close()
        self.etcd.close()

    def get_lock(self, name: str | bytes) -> LockdLock:  # type: ignore[override]
        return LockdLock(self, name)

    def _destroy_group(self, group_id: bytes) -> None:
        """Delete a group with its members (tooz's test helper; stock etcd3gw's deletes an unrelated key)."""
        prefix = self._prefix_group(group_id)
        self.etcd.delete(prefix, keys.range_end(prefix))

    def heartbeat(self) -> float:
        """The session keeps itself alive; tooz's heart only needs to know how often to ask."""
        try:
            self.session()
        except (BackendError, SessionExpired) as exc:
            LOG.warning("lockd heartbeat: %s", exc)
        return self.options.lease_ttl / 3
