"""Live lockd sessions: sidecars and shim processes, with how many locks each holds."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from lockd.api.deps import BackendDep
from lockd.api.models import MembersOut
from lockd.api.readmodel import members_out

router = APIRouter(prefix="/v1/members", tags=["members"])


@router.get("", response_model=MembersOut)
async def list_members(backend: BackendDep) -> MembersOut:
    """``last_seen`` is when the member last refreshed its session lease (granted TTL minus time left)."""
    backend.view.check()
    members = backend.view.members()
    stale = backend.leases.stale(m.lease for m in members)
    if stale:
        await run_in_threadpool(backend.refresh_leases, stale)
    return MembersOut(members=members_out(backend, members))
