"""Live lockd sessions: sidecars and shim processes, with how many locks each holds."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from lockd.api.backend import Backend
from lockd.api.deps import BackendDep
from lockd.api.models import MemberOut, MembersOut
from lockd.api.view import MemberRecord

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
