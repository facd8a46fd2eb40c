"""Who waits for whom, and the deadlocks in it (lockd.api.waits): read from the lock view, never from etcd."""

from __future__ import annotations

from fastapi import APIRouter

from lockd.api.deps import BackendDep
from lockd.api.models import DeadlockOut, DeadlocksOut, OwnerOut, ResolvedDeadlockOut, WaitEdgeOut, WaitsOut
from lockd.api.waits import Owner

router = APIRouter(prefix="/v1", tags=["waits"])


def owner_out(owner: Owner) -> OwnerOut:
    return OwnerOut(member=owner.member, host=owner.host, pid=owner.pid, thread=owner.thread)


@router.get("/waits", response_model=WaitsOut)
def waits(backend: BackendDep) -> WaitsOut:
    """The wait-for graph: an edge from each lockd waiter (a thread of a process) to the holder of its lock."""
    backend.view.check()
    edges = backend.view.wait_edges()
    owners = sorted({owner for edge in edges for owner in (edge.waiter, edge.holder)}, key=_order)
    return WaitsOut(
        owners=[owner_out(owner) for owner in owners],
        edges=[
            WaitEdgeOut(waiter=owner_out(e.waiter), holder=owner_out(e.holder), lock=e.lock, since=e.since)
            for e in edges
        ],
    )


@router.get("/deadlocks", response_model=DeadlocksOut)
def deadlocks(backend: BackendDep) -> DeadlocksOut:
    """Cycles in the wait-for graph now (each under a stable id, with the lock to break), and the last that ended."""
    backend.view.check()
    tracker = backend.view.deadlocks
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
