"""The console's routes: server-rendered pages that a small script refreshes in place.

Each page is a Jinja2 template whose changing part lives in its own ``*_live.html`` template. A request with
the header ``X-Lockd-Live: 1`` (the script's, every POLL_SECONDS while the tab is visible) gets only that part,
which the script swaps in; everything else on the page needs no script at all. Short polling rather than
server-sent events: a page costs one small request per poll on the watched copy of etcd (the cost with 10,000
locks is measured in docs/operations.md), and no response stays open, so `lockd serve` stops at once on
Ctrl-C even with pages open (uvicorn waits for open responses before it shuts down).

Times are rendered in UTC inside ``<time datetime=...>``; the script rewrites them in the reader's local time
and keeps UTC in the title (shown on hover). The admin token is never part of a page: the break button's
script asks for it per request (console.js).
"""

from __future__ import annotations

import datetime
import hashlib
import shlex
import urllib.parse
from pathlib import Path
from typing import Annotated

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from lockd.api.deps import BackendDep, LockName
from lockd.console import snapshot
from lockd.errors import BackendError, UsageError

#: Seconds between two refreshes of an open page: a change shows within this plus one answer.
POLL_SECONDS = 0.8
STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("lockd.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(timestamp: float | None) -> Markup:
    """A wall time as ``<time>`` in UTC (the script shows it in local time, with UTC on hover)."""
    if timestamp is None:
        return Markup("unknown")
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    text = moment.strftime("%Y-%m-%d %H:%M:%S UTC")  # digits, spaces, colons: nothing to escape
    iso = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Markup(f'<time datetime="{iso}" title="{text}">{text}</time>')


def _duration(seconds: float | None) -> str:
    """``4s``, ``2m 05s``, ``3h 02m``, ``2d 04h``: to the second while it matters."""
    if seconds is None:
        return "unknown"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _seconds(seconds: float | None) -> str:
    """A lock wait or hold: ``0.42ms``, ``12.3ms``, ``1.50s``, then as ``duration``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.3g}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    return _duration(seconds)


def _path_part(text: str) -> str:
    """A path segment with every reserved character escaped, '/' included (lock names may contain it)."""
    return urllib.parse.quote(text, safe="")


_templates.filters.update(when=_when, duration=_duration, seconds=_seconds, path_part=_path_part)
# An owner in the words of `lockd deadlocks`; a lock name quoted for a shell, as a command to copy.
_templates.filters.update(owner=snapshot.owner_label, shell=shlex.quote)
# Changes whenever a static file does, so a browser never runs an old script against new pages.
_ASSETS = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(STATIC_DIR.iterdir()))).hexdigest()[:12]
_templates.globals.update(assets=_ASSETS, poll_ms=int(POLL_SECONDS * 1000))


def _page(request: Request, name: str, status_code: int = 200, **context: object) -> Response:
    """The whole page, or only its live part when the console's script asks (``X-Lockd-Live: 1``)."""
    live = request.headers.get("x-lockd-live") == "1"
    template = name.replace(".html", "_live.html") if live else name
    body = _templates.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status_code, headers={"Cache-Control": "no-store"})


@router.get("/", response_class=HTMLResponse)
def overview_page(
    request: Request,
    backend: BackendDep,
    prefix: Annotated[str, Query(max_length=512)] = "",
) -> Response:
    """Held locks (longest held first, filtered by name prefix), members, recent force-breaks; and, above them
    while one is open, every deadlock (the same report as the Waits page), its locks and owners marked below."""
    if not all(" " <= ch <= "~" for ch in prefix):
        raise UsageError("prefix must be printable ASCII")
    view = snapshot.overview(backend, prefix)
    return _page(request, "overview.html", view=view, deadlocks=snapshot.deadlocks(backend))


@router.get("/ui/locks/{name:path}", response_class=HTMLResponse)
def lock_page(request: Request, name: LockName, backend: BackendDep) -> Response:
    """One lock: holder, lease, waiters in queue order, statuses of the resources its name names."""
    detail = snapshot.lock_detail(backend, name)
    live = request.headers.get("x-lockd-live") == "1"
    resources = [] if live else snapshot.resources_named_in(backend, name)
    # 404 while not held, so a script or a link checker can tell; the page still says what it knows.
    status = 404 if detail.lock is None and detail.error is None else 200
    return _page(request, "lock.html", status, detail=detail, resources=resources)


@router.get("/ui/status", response_class=HTMLResponse)
def find_status(kind: Annotated[str, Query(max_length=255)], id: Annotated[str, Query(max_length=255)]) -> Response:
    """The overview's lookup form lands here (a GET form cannot build a path)."""
    return RedirectResponse(f"/ui/status/{_path_part(kind)}/{_path_part(id)}", status_code=303)


@router.get("/ui/status/{kind}/{id:path}", response_class=HTMLResponse)
def status_page(request: Request, kind: str, id: str, backend: BackendDep) -> Response:
    """A resource's status and its recent transitions with the fencing tokens they carried."""
    try:
        found: snapshot.Resource | None = snapshot.resource(backend, kind, id)
        error = None
    except BackendError as exc:
        found, error = None, str(exc)
    status = 404 if found is not None and found.status is None else 200
    return _page(request, "status.html", status, resource=found, kind=kind, id=id, error=error)


@router.get("/ui/timeline", response_class=HTMLResponse)
def timeline_page(
    request: Request,
    backend: BackendDep,
    by: Annotated[str, Query(pattern="^(lock|host)$")] = "lock",
    minutes: Annotated[int, Query()] = 5,
    prefix: Annotated[str, Query(max_length=512)] = "",
) -> Response:
    """Holds of the last minutes, a row per lock or per host: who took turns, long holds, the queue behind."""
    if minutes not in snapshot.TIMELINE_MINUTES:
        raise UsageError(f"minutes must be one of {', '.join(map(str, snapshot.TIMELINE_MINUTES))}")
    if not all(" " <= ch <= "~" for ch in prefix):
        raise UsageError("prefix must be printable ASCII")
    view = snapshot.timeline(backend, minutes, by, prefix)
    return _page(request, "timeline.html", view=view, choices=snapshot.TIMELINE_MINUTES)


@router.get("/ui/hot", response_class=HTMLResponse)
def hot_page(request: Request, backend: BackendDep) -> Response:
    """Contention per lock template: where operations wait, and for how long compared with the holds."""
    return _page(request, "hot.html", view=snapshot.hot_locks(backend))


@router.get("/ui/waits", response_class=HTMLResponse)
def waits_page(request: Request, backend: BackendDep) -> Response:
    """Who waits for whom across hosts, the deadlocks in it with the lock to break, and the last that ended."""
    return _page(request, "waits.html", view=snapshot.waits(backend))
