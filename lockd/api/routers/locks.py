"""Held locks: list, show one, force-release one (audited)."""

from __future__ import annotations

import time
from typing import Annotated

import pydantic_core
from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from lockd.api.backend import Backend, NotHeld
from lockd.api.deps import AdminDep, BackendDep, LockName
from lockd.api.models import ErrorOut, LockOut, LocksOut
from lockd.api.readmodel import lock_out, lock_rows
from lockd.api.view import HeldLock
from lockd.errors import UsageError

router = APIRouter(prefix="/v1/locks", tags=["locks"])

_NOT_HELD = {404: {"model": ErrorOut, "description": "the lock is not held"}}
_BAD_NAME = {422: {"model": ErrorOut, "description": "the name is not 1..512 printable ASCII characters"}}


async def _fresh_leases(backend: Backend, locks: list[HeldLock]) -> None:
    """Ask etcd about leases whose TTL answer is older than a second (rare: lockd holders share one)."""
    stale = backend.ttl_to_refresh(locks)
    if stale:
        await run_in_threadpool(backend.refresh_leases, stale)


@router.get("", response_model=LocksOut, responses=_BAD_NAME)
async def list_locks(
    backend: BackendDep,
    prefix: Annotated[str, Query(max_length=512, description="only names starting with this")] = "",
    limit: Annotated[int | None, Query(ge=1, le=100_000, description="at most this many (one page)")] = None,
    after: Annotated[str, Query(max_length=512, description="only names after this: the last page's `next`")] = "",
) -> Response:
    """Every held lock (optionally those whose name starts with ``prefix``), sorted by name; with ``limit``, one
    page of them, and ``next`` to pass as ``after`` for the following page (null on the last)."""
    if not all(" " <= ch <= "~" for ch in prefix + after):
        raise UsageError("prefix and after must be printable ASCII")
    backend.view.check()
    locks, more = backend.view.locks(prefix, after, limit)
    await _fresh_leases(backend, locks)
    body = {"locks": lock_rows(backend, locks, time.monotonic()), "next": locks[-1].name if more else None}
    # Serialised here (FastAPI would validate the answer against LocksOut again, as slow as building models),
    # by pydantic's serializer: 4-5x faster than json.dumps on these rows.
    return Response(pydantic_core.to_json(body), media_type="application/json")


@router.get("/{name:path}", response_model=LockOut, responses={**_NOT_HELD, **_BAD_NAME})
async def get_lock(name: LockName, backend: BackendDep) -> LockOut:
    """One held lock: holder, fencing token, when taken, lease time left, waiters."""
    backend.view.check()
    lock = backend.view.lock(name)
    if lock is None:
        raise NotHeld(f"lock {name!r} is not held")
    await _fresh_leases(backend, [lock])
    return lock_out(backend, lock, time.monotonic())


@router.delete(
    "/{name:path}",
    status_code=204,
    response_class=Response,
    responses={
        **_NOT_HELD,
        **_BAD_NAME,
        401: {"model": ErrorOut, "description": "no admin token given"},
        403: {"model": ErrorOut, "description": "wrong admin token, or mutations disabled"},
    },
)
def break_lock(who: AdminDep, name: LockName, backend: BackendDep) -> Response:
    """Force-release a lock whoever holds it (audited). The old holder's ``is_still_owner()`` turns False."""
    backend.break_lock(name, who)
    return Response(status_code=204)
