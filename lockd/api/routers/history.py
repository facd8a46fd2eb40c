"""Recent holds of locks (lockd.api.history): who held what, with which token, how long, and how it ended."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query

from lockd.api import readmodel
from lockd.api.deps import BackendDep
from lockd.api.models import ErrorOut, HoldsOut
from lockd.errors import UsageError
from lockd.lock import validate_name

router = APIRouter(prefix="/v1/history", tags=["history"])

#: Holds per page at most.
MAX_LIMIT = 1000


@router.get(
    "",
    response_model=HoldsOut,
    responses={422: {"model": ErrorOut, "description": "a bad name, template, since, limit or cursor"}},
)
def history(
    backend: BackendDep,
    name: Annotated[str | None, Query(max_length=512, description="only holds of this lock")] = None,
    template: Annotated[
        str | None, Query(min_length=1, max_length=512, description="only holds of this template")
    ] = None,
    since: Annotated[float | None, Query(ge=0, description="only holds that ended at or after this Unix time")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="holds per page")] = 100,
    cursor: Annotated[str | None, Query(max_length=32, description="a page's `next`: the page after it")] = None,
) -> HoldsOut:
    """Finished holds, newest first, one page at a time (``next`` is the cursor of the next, older page), and on
    the first page the holds in progress that match. The sidecar keeps the last 100,000 holds or one hour of
    them by default, whichever is smaller (``history_holds``, ``history_seconds``)."""
    if name is not None:
        name = validate_name(name)
    if template is not None and not all(" " <= ch <= "~" for ch in template):
        raise UsageError("template must be printable ASCII")
    if since is not None and not math.isfinite(since):
        raise UsageError("since must be a finite Unix time")
    backend.view.check()
    return readmodel.history(backend.view, name=name, template=template, since=since, cursor=cursor, limit=limit)
