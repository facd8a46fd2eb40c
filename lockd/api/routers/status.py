"""Resource statuses: read one, move one by compare-and-set, read its recent transitions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from lockd.api.backend import NotFound
from lockd.api.deps import AdminDep, BackendDep
from lockd.api.models import ConflictOut, ErrorOut, HistoryOut, StatusOut, TransitionIn
from lockd.status.model import HISTORY_KEEP, check_resource

router = APIRouter(prefix="/v1/status", tags=["status"])

_UNKNOWN = {404: {"model": ErrorOut, "description": "no status recorded for this resource"}}


@router.get("/{kind}/{id}", response_model=StatusOut, responses=_UNKNOWN)
def get_status(kind: str, id: str, backend: BackendDep) -> StatusOut:
    kind, id = check_resource(kind, id)
    record = backend.status_store().get_record(kind, id)
    if record is None:
        raise NotFound(f"no status for {kind} {id}")
    status, revision = record
    return StatusOut(kind=kind, id=id, status=status, revision=revision)


@router.post(
    "/{kind}/{id}/transition",
    response_model=StatusOut,
    responses={
        409: {"model": ConflictOut, "description": "the status now is not in expected"},
        401: {"model": ErrorOut, "description": "no admin token given"},
        403: {"model": ErrorOut, "description": "wrong admin token, or mutations disabled"},
    },
)
def transition(kind: str, id: str, body: TransitionIn, who: AdminDep, backend: BackendDep) -> StatusOut | JSONResponse:
    """One atomic compare-and-set: ``target`` if the status is one of ``expected`` (null matches absent)."""
    kind, id = check_resource(kind, id)
    result = backend.status_store().compare_and_set(kind, id, body.expected, body.target, who=f"lockd-api {who}")
    if not result.ok:
        detail = f"{kind} {id} is {result.current!r}, not one of {sorted(map(str, body.expected))}"
        return JSONResponse({"detail": detail, "current": result.current}, status_code=409)
    return StatusOut(kind=kind, id=id, status=str(result.current), revision=result.revision)


@router.get("/{kind}/{id}/history", response_model=HistoryOut)
def history(
    kind: str, id: str, backend: BackendDep, limit: Annotated[int, Query(ge=0, le=HISTORY_KEEP)] = HISTORY_KEEP
) -> HistoryOut:
    """The resource's most recent transitions, newest first (who, at, from, to, token)."""
    kind, id = check_resource(kind, id)
    return HistoryOut(kind=kind, id=id, history=backend.status_store().history(kind, id, limit))
