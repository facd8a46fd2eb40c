"""Who waits for whom, and the deadlocks in it (lockd.api.waits): read from the lock view, never from etcd."""

from __future__ import annotations

from fastapi import APIRouter, Response

from lockd.api import readmodel
from lockd.api.deps import BackendDep
from lockd.api.models import DeadlocksOut, WaitsOut

router = APIRouter(prefix="/v1", tags=["waits"])


@router.get("/waits", response_model=WaitsOut)
def waits(backend: BackendDep) -> Response:
    """The wait-for graph: an edge from each lockd waiter (a thread of a process) to the holder of its lock."""
    backend.view.check()
    # Serialised by the read model and kept per view revision: WaitsOut models for 10,000 waiters, validated
    # again by FastAPI, cost 0.8-1.6 s an answer (bench/waits_scale.py).
    return Response(readmodel.waits_json(backend.view), media_type="application/json")


@router.get("/deadlocks", response_model=DeadlocksOut)
def deadlocks(backend: BackendDep) -> DeadlocksOut:
    """Cycles in the wait-for graph now (each under a stable id, with the lock to break), and the last that ended."""
    backend.view.check()
    return readmodel.deadlocks(backend.view)
