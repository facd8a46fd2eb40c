"""Who waits for whom, and the deadlocks in it (lockd.api.waits): read from the lock view, never from etcd."""

from __future__ import annotations

from fastapi import APIRouter

from lockd.api import readmodel
from lockd.api.deps import BackendDep
from lockd.api.models import DeadlocksOut, WaitsOut

router = APIRouter(prefix="/v1", tags=["waits"])


@router.get("/waits", response_model=WaitsOut)
def waits(backend: BackendDep) -> WaitsOut:
    """The wait-for graph: an edge from each lockd waiter (a thread of a process) to the holder of its lock."""
    backend.view.check()
    return readmodel.waits(backend.view)


@router.get("/deadlocks", response_model=DeadlocksOut)
def deadlocks(backend: BackendDep) -> DeadlocksOut:
    """Cycles in the wait-for graph now (each under a stable id, with the lock to break), and the last that ended."""
    backend.view.check()
    return readmodel.deadlocks(backend.view)
