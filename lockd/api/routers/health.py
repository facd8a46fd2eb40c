"""Liveness (the process answers) and readiness (etcd answers and the lock view is current)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from lockd.api.deps import BackendDep
from lockd.api.models import ErrorOut, Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """200 while the process runs; says nothing about etcd (that is /readyz)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorOut, "description": "etcd is down"}})
async def readyz(backend: BackendDep) -> Health:
    """200 when etcd answers now and the lock view is current, else 503 with the reason."""
    await run_in_threadpool(backend.probe)
    return Health(status="ready")
