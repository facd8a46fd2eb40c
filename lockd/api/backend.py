"""What the admin API does to etcd: open and close it, read through the lock view, break locks, reach statuses.

Reads go to the watched copy (lockd.api.view) and the lease cache (lockd.api.leases); the writes (a force
break, a status transition) and the readiness probe go to etcd itself, because they must be current.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from typing import Any

from lockd.api.history import HoldLog
from lockd.api.leases import LeaseClock
from lockd.api.profile import Profile
from lockd.api.view import HeldLock, LockView
from lockd.api.waits import Deadlock
from lockd.config import Settings
from lockd.errors import BackendError, LockdError, UsageError
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.force_break import BreakRecord, break_lock
from lockd.lock import Holder
from lockd.metrics import Metrics
from lockd.options import parse_backend_url
from lockd.session import Session
from lockd.status.model import StatusStore

LOG = logging.getLogger(__name__)

_PROBE_TIMEOUT = 2.0


class NotHeld(LockdError):
    """The named lock is not held (HTTP 404)."""


class NotFound(LockdError):
    """The named resource has no status (HTTP 404)."""


class Backend:
    """The etcd side of one app. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        if not settings.backend_url:
            raise UsageError("the admin API needs a backend URL (lockd serve supplies the embedded one)")
        extra = {"lease_ttl": str(settings.lease_ttl)} if settings.lease_ttl else None
        self.options = parse_backend_url(settings.backend_url, extra)
        self.settings = settings
        self.metrics = metrics
        self.client = EtcdClient(self.options, on_failure=metrics.etcd_errors.inc)
        self.view = LockView(
            self.client,
            on_lease_loss=self._lease_lost,
            history=HoldLog(settings.history_holds, settings.history_seconds),
            profile=Profile(observer=metrics),
        )
        if settings.deadlock_break_after is not None:
            self.view.deadlocks.break_after = settings.deadlock_break_after
            self.view.deadlocks.breaker = self._break_deadlock
        self.leases = LeaseClock(self.client)
        self.member = f"lockd-serve-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._session: Session | None = None
        self._status: StatusStore | None = None
        self._status_lock = threading.Lock()
        self._recent_breaks: tuple[int, int, list[dict[str, Any]]] = (-1, 0, [])  # (audit revision, limit, records)

    def _lease_lost(self, member: str, locks: int) -> None:
        self.metrics.lease_losses.inc()

    # -- lifecycle ------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Start the lock view and register the sidecar as a member; etcd being down is not fatal here."""
        self.view.start()
        self.metrics.watch(self.view.totals, lambda: len(self.view.deadlocks.current()))
        self.view.wait_first_read()
        try:
            self._session = Session(self.client, self.options.lease_ttl, self.member)
        except BackendError as exc:
            LOG.warning("sidecar not registered as a member (etcd unavailable: %s); serving anyway", exc)

    def close(self) -> None:
        self.view.stop()
        if self._session is not None:
            self._session.close()
        if self._status is not None:
            self._status.close()
        self.client.close()

    # -- health ---------------------------------------------------------------------------------------------

    def probe(self) -> None:
        """Ask etcd for its status now. Raises BackendError (and restarts the view's watch) when it cannot."""
        try:
            self.client.cluster_status(timeout=_PROBE_TIMEOUT)
        except BackendError:
            self.view.restart_stream()
            raise
        self.view.check()

    # -- locks ----------------------------------------------------------------------------------------------

    def ttl_to_refresh(self, locks: list[HeldLock]) -> list[int]:
        return self.leases.stale(lock.lease for lock in locks)

    def refresh_leases(self, leases: list[int]) -> None:
        self.leases.refresh(leases)

    def break_lock(self, name: str, requested_by: str) -> BreakRecord:
        """Free ``name`` whoever holds it, audited (lockd.force_break); its holder's other locks are untouched.

        Raises:
            NotHeld: no such lock key.
            BackendError: etcd failed; the lock may or may not have been broken (look again).
        """
        record = break_lock(self.client, name, requested_by)
        if record is None:
            raise NotHeld(f"lock {name!r} is not held")
        self.metrics.breaks.inc()
        LOG.warning(
            "force-released lock %r (token %d, holder %s) at the request of %s",
            name,
            record.token,
            _describe(record.holder),
            requested_by,
        )
        return record

    def _break_deadlock(self, deadlock: Deadlock) -> None:
        """The opt-in automatic break (``deadlock_break_after``): the suggested hold, at the token reported."""
        victim = deadlock.victim
        after = self.settings.deadlock_break_after
        who = f"{self.member} (deadlock {deadlock.id} lasted {after:g}s: deadlock_break_after)"
        record = break_lock(self.client, victim.lock, who, token=victim.token)
        if record is None:
            LOG.info(
                "deadlock %s: lock %r is no longer held at token %d; nothing broken",
                deadlock.id,
                victim.lock,
                victim.token,
            )
            return
        self.metrics.breaks.inc()
        LOG.warning(
            "deadlock %s: force-released lock %r (token %d, holder %s) automatically after %gs",
            deadlock.id,
            victim.lock,
            record.token,
            _describe(record.holder),
            self.settings.deadlock_break_after,
        )

    def audit(self, name: str | None, limit: int) -> list[dict[str, Any]]:
        """Recorded breaks, newest first (of one lock, or of all)."""
        prefix = keys.AUDIT_PREFIX + (keys.quote(name) + b"/" if name is not None else b"")
        kvs, _ = self.client.range(
            prefix, keys.range_end(prefix), limit=str(limit), sort_order="DESCEND", sort_target="CREATE"
        )
        out = []
        for kv in kvs:
            try:
                data = json.loads(kv.value)
            except ValueError:
                continue
            if isinstance(data, dict):
                out.append(data)
        return out

    def recent_breaks(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` breaks, read from etcd only when the view saw the audit trail change (the console
        asks every second; a break is rare)."""
        seen, cached_limit, records = self._recent_breaks
        revision = self.view.audit_revision
        if seen != revision or cached_limit != limit:
            records = self.audit(None, limit)
            self._recent_breaks = (revision, limit, records)
        return records

    # -- statuses -------------------------------------------------------------------------------------------

    def status_store(self) -> StatusStore:
        with self._status_lock:
            if self._status is None:
                from lockd.status import open_store

                self._status = open_store(self.settings.status_url, self.client)
            return self._status


def _describe(holder: Holder) -> str:
    if not holder.is_lockd:
        return "a stock tooz client"
    return f"{holder.member} on {holder.host} pid {holder.pid}"
