"""The record of force-released locks (each break writes one, in the same etcd txn as the delete)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from lockd.api.deps import BackendDep
from lockd.api.models import AuditOut
from lockd.api.readmodel import breaks_out
from lockd.lock import validate_name

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=AuditOut)
def list_breaks(
    backend: BackendDep,
    name: Annotated[str | None, Query(max_length=512, description="only breaks of this lock")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditOut:
    """Recorded breaks, newest first."""
    if name is not None:
        name = validate_name(name)
    return AuditOut(breaks=breaks_out(backend.audit(name, limit)))
