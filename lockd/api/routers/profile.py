"""Contention per lock template (lockd.api.profile): acquisitions, wait and hold percentiles, waiters now."""

from __future__ import annotations

from fastapi import APIRouter

from lockd.api import readmodel
from lockd.api.deps import BackendDep
from lockd.api.models import ProfileOut

router = APIRouter(prefix="/v1/profile", tags=["profile"])


@router.get("", response_model=ProfileOut)
def profile(backend: BackendDep) -> ProfileOut:
    """Per template (UUIDs in names folded to ``{id}``), busiest first: acquisitions since the sidecar started
    watching, wait and hold p50/p99 over the last ``samples`` of each, and the waiters queued now."""
    backend.view.check()
    return readmodel.profile(backend.view)
