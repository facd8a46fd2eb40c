"""What each console page shows, gathered from the admin API's backend as plain values the templates print.

Everything comes from the watched copy of etcd (lockd.api.view) and the lease clock, as the JSON API's answers
do, so a page costs no etcd round trip per lock: only the lease times of the shown locks (once a second per
lease; lockd holders share one per process), the audit trail (only when the view saw it change) and resource
statuses are asked of etcd. The same functions serve the full page and its live refresh.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lockd.api import readmodel
from lockd.api.backend import Backend
from lockd.api.history import Hold
from lockd.api.models import BreakOut, LockOut, MemberOut, OwnerOut, ResolvedDeadlockOut, TemplateOut, WaitEdgeOut
from lockd.api.readmodel import breaks_out, lock_out, members_out
from lockd.errors import BackendError
from lockd.status.model import check_resource

#: Locks listed on the overview: the ones held longest. The count of all matching ones is shown beside them.
ROWS = 100
#: Force-breaks listed on the overview, newest first.
BREAKS = 10
#: Kinds looked up for an id found in a lock name: Cinder's resources whose ids its lock names carry.
STATUS_KINDS = ("volume", "snapshot", "backup", "group")
#: The timeline: rows drawn at most (the most recently active), holds read at most, window lengths offered.
TIMELINE_ROWS = 30
TIMELINE_HOLDS = 3000
TIMELINE_MINUTES = (1, 5, 15, 60)
#: Templates on the hot-locks page, busiest first.
HOT_ROWS = 50
#: The Waits page: edges of the wait-for graph listed (the ones waiting longest), deadlocks that ended listed.
WAIT_ROWS = 100
RESOLVED_ROWS = 20
#: Bar colours of the timeline, picked per host (rows per lock) or per template (rows per host); colour-blind
#: safe (Okabe-Ito), and every bar also names its owner in its tooltip.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")
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


# -- timeline and hot locks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One hold on a row: x and width in thousandths of the window; the wait before it, when known, likewise."""

    x: float
    width: float
    wait_x: float | None
    wait_width: float
    how: str
    colour: str
    title: str


@dataclass(frozen=True)
class Row:
    key: str  # the lock name or the host
    bars: list[Bar]
    waiting: list[tuple[float, float]]  # the queue behind the hold now: (x, width) per waiter, as thin lines
    last: float  # the row's latest activity (rows are ordered by it, newest first)


@dataclass(frozen=True)
class Timeline:
    by: str  # "lock" or "host"
    minutes: int
    prefix: str
    start: float
    now: float
    rows: list[Row]
    ticks: list[tuple[float, str]]  # (x in thousandths, "-3m")
    holds: int  # holds drawn
    more_rows: int  # rows left out (beyond TIMELINE_ROWS)
    kept: int  # holds the history keeps (0: history off)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (host or template, colour) of bars drawn
    error: str | None = None


def _colours(keys: Iterable[str | None]) -> dict[str | None, str]:
    """A colour per key (host or template): its hashed colour, or the next one free when a key before it (in
    sorted order) has it, so up to len(PALETTE) keys on one page never share a colour: two hosts taking turns
    on a lock must look different. Stable while the set of keys is (a page refreshes every second)."""
    out: dict[str | None, str] = {}
    for key in sorted(set(keys), key=lambda k: k or ""):
        digest = hashlib.blake2s((key or "").encode(), digest_size=2).digest()
        start = int.from_bytes(digest, "big") % len(PALETTE)
        free = [PALETTE[(start + i) % len(PALETTE)] for i in range(len(PALETTE))]
        out[key] = next((c for c in free if c not in out.values()), PALETTE[start])
    return out


def _owner(hold: Hold) -> str:
    if hold.member is None:
        return "a stock tooz holder"
    return f"{hold.member} on {hold.host} pid {hold.pid} thread {hold.thread}"


def timeline(backend: Backend, minutes: int, by: str, prefix: str) -> Timeline:
    """Holds of the last ``minutes`` (finished and in progress) laid out on rows per lock or per host."""
    now = time.time()
    start = now - minutes * 60
    span = now - start
    ticks = [(1000 * (i / minutes), f"-{minutes - i}m" if minutes - i else "now") for i in range(minutes + 1)]
    if minutes > 15:
        ticks = ticks[:: minutes // 6]
    try:
        backend.view.check()
    except BackendError as exc:
        return Timeline(by, minutes, prefix, start, now, [], ticks, 0, 0, 0, error=str(exc))
    holds = [h for h in readmodel.recent_holds(backend.view, start, TIMELINE_HOLDS) if h.name.startswith(prefix)]
    groups: dict[str, list[Hold]] = {}
    for hold in holds:
        key = hold.name if by == "lock" else (hold.host or "stock tooz")
        groups.setdefault(key, []).append(hold)
    queued = backend.view.queued_since(list(groups)) if by == "lock" else {}
    colours = _colours(hold.host if by == "lock" else hold.template for hold in holds)
    rows = []
    for key, members in groups.items():
        bars = []
        last = start
        for hold in members:
            begin = max(start, hold.started if hold.started is not None else start)
            end = hold.ended if hold.ended is not None else now
            last = max(last, end if hold.ended is not None else now)
            waited_from = max(start, begin - hold.waited) if hold.waited else None
            title = (
                f"{hold.name}: token {hold.token}, {_owner(hold)}; "
                + (f"waited {hold.waited:.3f}s, " if hold.waited is not None else "")
                + (
                    f"held {end - begin:.3f}s, {hold.how}"
                    if hold.ended is not None
                    else f"held for {end - begin:.1f}s so far"
                )
            )
            bars.append(
                Bar(
                    x=1000 * (begin - start) / span,
                    width=max(1.0, 1000 * (end - begin) / span),  # a hold of a millisecond still shows
                    wait_x=1000 * (waited_from - start) / span if waited_from is not None else None,
                    wait_width=1000 * (begin - waited_from) / span if waited_from is not None else 0.0,
                    how=hold.how,
                    colour=colours[hold.host if by == "lock" else hold.template],
                    title=title,
                )
            )
        waiting = [
            (1000 * (max(start, seen) - start) / span, 1000 * (now - max(start, seen)) / span)
            for seen in queued.get(key, [])
            if seen is not None
        ]
        rows.append(Row(key, sorted(bars, key=lambda bar: bar.x), waiting, last))
    rows.sort(key=lambda row: (-row.last, row.key))
    shown = rows[:TIMELINE_ROWS]
    # The colour key names what each colour drawn stands for: a host (rows per lock; stock tooz holders have
    # none) or a template (rows per host).
    drawn = {hold.host if by == "lock" else hold.template for row in shown for hold in groups[row.key]}
    legend = sorted((k or "stock tooz", colours[k]) for k in drawn)
    return Timeline(
        by, minutes, prefix, start, now, shown, ticks, sum(len(r.bars) for r in shown), len(rows) - len(shown),
        len(backend.view.history), legend,
    )  # fmt: skip


@dataclass(frozen=True)
class HotLocks:
    templates: list[TemplateOut]  # busiest first, at most HOT_ROWS
    total: int
    samples: int
    error: str | None = None


def hot_locks(backend: Backend) -> HotLocks:
    """The contention profile (lockd.api.profile), busiest templates first."""
    try:
        backend.view.check()
    except BackendError as exc:
        return HotLocks([], 0, 0, error=str(exc))
    profile = readmodel.profile(backend.view)
    return HotLocks(profile.templates[:HOT_ROWS], len(profile.templates), profile.samples)


# -- who waits for whom, and deadlocks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CycleEdge:
    """One step of a deadlock: ``waiter`` waits for ``lock``, held by ``holder`` (the next step's waiter)."""

    waiter: OwnerOut
    lock: str
    holder: OwnerOut
    suggested: bool  # ``lock`` is the one to break


@dataclass(frozen=True)
class OpenDeadlock:
    id: str
    since: float
    lasted: float  # seconds, up to the page's making
    edges: list[CycleEdge]  # in cycle order
    suggested_break: str


@dataclass(frozen=True)
class Deadlocks:
    """The deadlocks now, the last that ended, and what a page marks: every lock and process in an open cycle."""

    open: list[OpenDeadlock]
    resolved: list[ResolvedDeadlockOut]  # newest first, at most RESOLVED_ROWS
    locks: frozenset[str]
    processes: frozenset[tuple[str | None, str | None, int | None]]  # (member, host, pid) with a thread in a cycle
    now: float
    error: str | None = None


@dataclass(frozen=True)
class Waits:
    deadlocks: Deadlocks
    edges: list[WaitEdgeOut]  # the WAIT_ROWS waiting longest, longest first
    total: int  # edges in the graph
    cycle_edges: frozenset[tuple[str, str]]  # (lock, waiter's label) of every edge in an open cycle, to mark rows


def owner_label(owner: OwnerOut) -> str:
    """How a page names an owner: the same words as ``lockd deadlocks`` and the sidecar's log."""
    if owner.member is None:
        return "a stock tooz holder"
    return f"{owner.member} (host {owner.host}, pid {owner.pid}, thread {owner.thread})"


def deadlocks(backend: Backend) -> Deadlocks:
    """The deadlock tracker's report (lockd.api.waits) as the console shows it: each cycle as its edges.

    No I/O and no graph walk: the tracker keeps the cycles it found, so the overview can show them on every
    refresh for nothing when there are none.
    """
    now = time.time()
    try:
        backend.view.check()
    except BackendError as exc:
        return Deadlocks([], [], frozenset(), frozenset(), now, error=str(exc))
    report = readmodel.deadlocks(backend.view)
    found = []
    for d in report.deadlocks:
        owners = d.owners
        steps = [
            CycleEdge(owner, lock, owners[(i + 1) % len(owners)], lock == d.suggested_break)
            for i, (owner, lock) in enumerate(zip(owners, d.locks, strict=True))
        ]
        found.append(OpenDeadlock(d.id, d.since, max(0.0, now - d.since), steps, d.suggested_break))
    return Deadlocks(
        found,
        report.resolved[:RESOLVED_ROWS],
        frozenset(lock for d in report.deadlocks for lock in d.locks),
        frozenset((o.member, o.host, o.pid) for d in report.deadlocks for o in d.owners),
        now,
    )


def waits(backend: Backend) -> Waits:
    """The Waits page: the deadlocks, and who waits for whom (the WAIT_ROWS edges waiting longest)."""
    found = deadlocks(backend)
    if found.error is not None:
        return Waits(found, [], 0, frozenset())
    total, edges = readmodel.longest_waits(backend.view, WAIT_ROWS)
    marked = frozenset((e.lock, owner_label(e.waiter)) for d in found.open for e in d.edges)
    return Waits(found, edges, total, marked)
