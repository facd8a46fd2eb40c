"""What each console page shows, gathered from the admin API's backend as plain values the templates print.

Everything comes from the watched copy of etcd (lockd.api.view) and the lease clock, as the JSON API's answers
do, so a page costs no etcd round trip per lock: only the lease times of the shown locks (once a second per
lease; lockd holders share one per process), the audit trail (only when the view saw it change) and resource
statuses are asked of etcd. The same functions serve the full page and its live refresh.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from lockd.api.backend import Backend
from lockd.api.models import BreakOut, LockOut, MemberOut
from lockd.api.routers.audit import breaks_out
from lockd.api.routers.locks import lock_out
from lockd.api.routers.members import members_out
from lockd.errors import BackendError
from lockd.status.model import check_resource

#: Locks listed on the overview: the ones held longest. The count of all matching ones is shown beside them.
ROWS = 100
#: Force-breaks listed on the overview, newest first.
BREAKS = 10
#: Kinds looked up for an id found in a lock name: Cinder's resources whose ids its lock names carry.
STATUS_KINDS = ("volume", "snapshot", "backup", "group")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class Overview:
    prefix: str
    total: int  # locks whose name starts with prefix
    locks: list[LockOut]  # the ROWS of them held longest, longest first
    members: list[MemberOut]
    breaks: list[BreakOut]
    now: float  # wall time the page was made (held-for is now - acquired_at)
    error: str | None = None  # why the view cannot be trusted now (etcd down); the rest is then empty


@dataclass(frozen=True)
class Waiter:
    position: int  # 1 = next to get the lock
    waiter: str  # the queue entry's id (session lease in hex, then a per-acquire id)
    revision: int  # etcd revision it queued at: queue order
    member: str | None
    host: str | None
    pid: int | None


@dataclass(frozen=True)
class LockDetail:
    name: str
    lock: LockOut | None  # None: not held now
    queue: list[Waiter]
    now: float
    error: str | None = None


@dataclass(frozen=True)
class Resource:
    kind: str
    id: str
    status: str | None  # None: no status recorded
    revision: int | None
    history: list[dict[str, Any]] = field(default_factory=list)  # newest first: who, at, from, to, token


def overview(backend: Backend, prefix: str) -> Overview:
    """Held locks matching ``prefix`` (longest held first), members and recent breaks. Blocking (lease asks)."""
    now_wall = time.time()
    try:
        backend.view.check()
        total, held = backend.view.held_longest(prefix, ROWS)
        members = backend.view.members()
        stale = backend.ttl_to_refresh(held) + backend.leases.stale(m.lease for m in members)
        if stale:
            backend.refresh_leases(stale)
        breaks = breaks_out(backend.recent_breaks(BREAKS))
    except BackendError as exc:
        return Overview(prefix, 0, [], [], [], now_wall, error=str(exc))
    now = time.monotonic()
    locks = [lock_out(backend, lock, now) for lock in held]
    return Overview(prefix, total, locks, members_out(backend, members), breaks, now_wall)


def lock_detail(backend: Backend, name: str) -> LockDetail:
    """One lock: its holder and its waiters in queue order (each with its member when that is known)."""
    now_wall = time.time()
    try:
        backend.view.check()
        held = backend.view.lock(name)
        if held is not None and (stale := backend.ttl_to_refresh([held])):
            backend.refresh_leases(stale)
    except BackendError as exc:
        return LockDetail(name, None, [], now_wall, error=str(exc))
    queue = []
    for position, entry in enumerate(backend.view.queue(name), start=1):
        member = backend.view.member_of_lease(entry.lease)
        queue.append(
            Waiter(
                position,
                entry.waiter,
                entry.revision,
                member.member if member else None,
                member.host if member else None,
                member.pid if member else None,
            )
        )
    lock = lock_out(backend, held, time.monotonic()) if held is not None else None
    return LockDetail(name, lock, queue, now_wall)


def resource(backend: Backend, kind: str, id: str) -> Resource:
    """A resource's status and recent transitions. Raises UsageError on a bad kind or id, BackendError."""
    kind, id = check_resource(kind, id)
    store = backend.status_store()
    record = store.get_record(kind, id)
    if record is None:
        return Resource(kind, id, None, None)
    return Resource(kind, id, record[0], record[1], store.history(kind, id))


def resources_named_in(backend: Backend, name: str) -> list[Resource]:
    """Statuses recorded for the ids (UUIDs, as Cinder's are) in a lock name, over STATUS_KINDS.

    An id with no status of any of those kinds is still listed once (as a volume, Cinder's commonest) so the
    page can say so and link to where its status would appear.
    """
    found = []
    try:
        for id in dict.fromkeys(match.lower() for match in _UUID.findall(name)):
            recorded = [r for kind in STATUS_KINDS if (r := resource(backend, kind, id)).status is not None]
            found.extend(recorded or [Resource(STATUS_KINDS[0], id, None, None)])
    except BackendError:
        return found  # the lock part of the page still shows; the live refresh says etcd is down
    return found
