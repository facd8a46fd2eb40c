"""The admin API's one read model: what the JSON routers, the console and (through the API) the CLI show.

Everything here reads the watched copy of etcd (lockd.api.view), its hold history and contention profile
(lockd.api.history, lockd.api.profile) and the lease clock, and turns them into the answer models of
lockd.api.models; only the audit trail is read from etcd (by the backend, when it changed). The routers are
thin: they validate a request, call one function here and return what it gives. The console's snapshot
(lockd.console.snapshot) calls the same functions, so a page and the JSON it mirrors cannot disagree, and the
CLI validates the API's answers against the same models (lockd.cli.admin_client.get_answer: `lockd profile`,
`lockd history`).
"""

from __future__ import annotations

import heapq
import math
import time
from typing import Any

from pydantic import ValidationError

from lockd.api.backend import Backend
from lockd.api.history import Hold
from lockd.api.models import (
    BreakOut,
    DeadlockOut,
    DeadlocksOut,
    HolderOut,
    HoldOut,
    HoldsOut,
    LockOut,
    MemberOut,
    OwnerOut,
    ProfileOut,
    ResolvedDeadlockOut,
    TemplateOut,
    WaitEdgeOut,
)
from lockd.api.view import HeldLock, LockView, MemberRecord
from lockd.api.waits import Edge, Owner
from lockd.errors import UsageError

# -- locks, members, breaks -------------------------------------------------------------------------------------


def lock_out(backend: Backend, lock: HeldLock, now: float) -> LockOut:
    """One held lock as the API shows it (``now``: time.monotonic(), for the lease's time left)."""
    holder = lock.holder
    ttl = backend.leases.get(lock.lease)
    return LockOut(
        name=lock.name,
        holder=HolderOut(member=holder.member, host=holder.host, pid=holder.pid) if holder.is_lockd else None,
        token=lock.token,
        acquired_at=lock.acquired_at,
        ttl_remaining=ttl.left(now) if ttl is not None else None,
        waiters=backend.view.waiters(lock.name),
    )


def lock_rows(backend: Backend, locks: list[HeldLock], now: float) -> list[dict[str, Any]]:
    """What ``lock_out`` gives, for many locks at once, as plain dicts in LockOut's shape.

    Why not LockOut: building and validating a pydantic model per lock cost ~40 us a lock on the
    benchmark machine, seconds per listing of 100,000 locks (docs/benchmarks.md, admin-scale). Here a
    lease's time left is computed once per lease (lockd holders share one per process) and the waiter
    counts are read under one hold of the view's mutex. tests/integration/test_api_locks.py checks that both
    paths give the same answer.
    """
    waiting = backend.view.waiter_counts()
    ttl: dict[int, float | None] = {}
    rows = []
    for lock in locks:
        lease = lock.lease
        if lease not in ttl:
            known = backend.leases.get(lease)
            ttl[lease] = known.left(now) if known is not None else None
        holder = lock.holder
        mine = holder.is_lockd
        rows.append(
            {
                "name": lock.name,
                "holder": {"member": holder.member, "host": holder.host, "pid": holder.pid} if mine else None,
                "token": lock.token,
                "acquired_at": lock.acquired_at,
                "ttl_remaining": ttl[lease],
                "waiters": waiting.get(lock.name, 0),
            }
        )
    return rows


def members_out(backend: Backend, members: list[MemberRecord]) -> list[MemberOut]:
    """``members`` with their lock counts and last refresh, from the view and the lease clock (no I/O)."""
    counts = backend.view.locks_by_member()
    now_wall, now = time.time(), time.monotonic()
    out = []
    for m in members:
        ttl = backend.leases.get(m.lease)
        last_seen = round(now_wall - ttl.last_refresh(now), 3) if ttl is not None and ttl.remaining >= 0 else None
        out.append(
            MemberOut(member=m.member, host=m.host, pid=m.pid, locks_held=counts.get(m.member, 0), last_seen=last_seen)
        )
    return out


def breaks_out(records: list[dict[str, Any]]) -> list[BreakOut]:
    """Audit records as breaks; a record lockd did not write is skipped rather than failing the listing."""
    breaks = []
    for item in records:
        try:
            breaks.append(BreakOut.model_validate(item))
        except ValidationError:
            continue
    return breaks


# -- who waits for whom ------------------------------------------------------------------------------------------


def owner_out(owner: Owner) -> OwnerOut:
    return OwnerOut(member=owner.member, host=owner.host, pid=owner.pid, thread=owner.thread)


def waits_json(view: LockView) -> bytes:
    """``GET /v1/waits``'s answer (WaitsOut's shape), serialised, and kept for as long as the graph stands.

    Why not WaitsOut: with 10,000 waiters, building the models cost ~400 ms and FastAPI's validation of them as
    much again; plain dicts serialised by pydantic's serializer cost a tenth of that (bench/waits_scale.py).
    Made by the graph the view keeps (lockd.api.waits.KeptGraph) from the JSON it keeps per lock and per owner:
    a second asker of the same graph (a dashboard, the console, several operators) pays nothing, and after a
    change only what changed is serialised again. The same bytes as ``to_json(wait_rows(edges))``.
    """
    return view.graph.drawn().body


def wait_rows(edges: list[Edge]) -> dict[str, list[dict[str, Any]]]:
    """``edges`` as WaitsOut's plain dicts, drawn from scratch (each owner's dict made once, however many edges
    name it): what ``waits_json`` answers, which tests/unit/test_waits_incremental.py checks against it."""
    owners: dict[Owner, dict[str, Any]] = {}
    rows = []
    for e in edges:
        waiter = owners.get(e.waiter)
        if waiter is None:
            waiter = owners[e.waiter] = _owner_row(e.waiter)
        holder = owners.get(e.holder)
        if holder is None:
            holder = owners[e.holder] = _owner_row(e.holder)
        rows.append({"waiter": waiter, "holder": holder, "lock": e.lock, "since": e.since})
    return {"owners": [owners[o] for o in sorted(owners, key=_order)], "edges": rows}


def longest_waits(view: LockView, limit: int) -> tuple[int, list[WaitEdgeOut]]:
    """(edges in the wait-for graph, the ``limit`` of them waiting longest, longest first): what a page shows."""
    edges = view.graph.edges()
    longest = heapq.nsmallest(limit, edges, key=lambda e: (e.since if e.since is not None else math.inf, e.lock))
    return len(edges), [
        WaitEdgeOut(waiter=owner_out(e.waiter), holder=owner_out(e.holder), lock=e.lock, since=e.since) for e in longest
    ]


def _owner_row(owner: Owner) -> dict[str, Any]:
    return {"member": owner.member, "host": owner.host, "pid": owner.pid, "thread": owner.thread}


def deadlocks(view: LockView) -> DeadlocksOut:
    """The cycles now (each under its stable id, with the lock to break) and the last ones that ended."""
    tracker = view.deadlocks
    return DeadlocksOut(
        deadlocks=[
            DeadlockOut(
                id=d.id,
                since=d.since,
                locks=d.locks,
                owners=[owner_out(o) for o in d.owners],
                suggested_break=d.suggested_break,
            )
            for d in tracker.current()
        ],
        resolved=[
            ResolvedDeadlockOut(id=r.id, since=r.since, ended=r.ended, locks=list(r.locks), how=r.how)
            for r in tracker.resolved()
        ],
    )


def _order(owner: Owner) -> tuple[str, str, int, int]:
    return (owner.member or "", owner.host or "", owner.pid or 0, owner.thread or 0)


# -- history and profile -----------------------------------------------------------------------------------------


def hold_out(hold: Hold, now: float) -> HoldOut:
    """``now`` (wall time) is the end of a hold still in progress, for its time held so far."""
    held = hold.held if hold.ended is not None else (now - hold.started if hold.started is not None else None)
    return HoldOut(
        name=hold.name,
        template=hold.template,
        owner=OwnerOut(member=hold.member, host=hold.host, pid=hold.pid, thread=hold.thread),
        token=hold.token,
        started=hold.started,
        waited=hold.waited,
        held=max(0.0, held) if held is not None else None,
        ended=hold.ended,
        how=hold.how,
        ended_between=hold.ended_between,
    )


def parse_cursor(cursor: str | None) -> int | None:
    """A history page's cursor (the number of the last hold it showed). Raises UsageError when it is not one."""
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise UsageError(f"cursor {cursor!r} is not one this server gave (pass a page's `next` unchanged)")
    return int(cursor)


def holds_in_progress(view: LockView, name: str | None, template: str | None, limit: int) -> list[Hold]:
    """Holds now (of ``name`` / ``template``), the ``limit`` held longest. No ``since``: a hold in progress
    covers every moment up to now."""
    now = time.time()
    return [lock.as_hold(now) for lock in view.holding(name, template, limit)]


def history(
    view: LockView,
    *,
    name: str | None = None,
    template: str | None = None,
    since: float | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> HoldsOut:
    """One page of the hold history, newest first, and (on the first page) the holds in progress.

    Raises:
        UsageError: a cursor this server did not give.
    """
    before = parse_cursor(cursor)
    now = time.time()
    found, more = view.history.page(name=name, template=template, since=since, before=before, limit=limit)
    held = holds_in_progress(view, name, template, limit) if before is None else []
    return HoldsOut(
        holds=[hold_out(h, now) for h in found],
        held=[hold_out(h, now) for h in held],
        next=str(more) if more is not None else None,
        kept=len(view.history),
    )


def profile(view: LockView) -> ProfileOut:
    """Contention per template: acquisitions, wait and hold p50/p99, waiters now; busiest first."""
    rows = view.profile.rows(view.waiters_by_template())
    return ProfileOut(
        templates=[
            TemplateOut(
                template=r.template,
                acquisitions=r.acquisitions,
                wait_p50=r.wait_p50,
                wait_p99=r.wait_p99,
                hold_p50=r.hold_p50,
                hold_p99=r.hold_p99,
                waiters=r.waiters,
            )
            for r in rows
        ],
        samples=view.profile.samples,
    )


def recent_holds(view: LockView, since: float, limit: int) -> list[Hold]:
    """Holds that ended at or after ``since`` (the newest ``limit``) and every hold in progress (the ``limit``
    held longest): what a timeline from ``since`` to now draws."""
    found, _ = view.history.page(since=since, limit=limit)
    return found + holds_in_progress(view, None, None, limit)
