"""``lockd history``: recent holds of locks (lockd.api.history), as a table for people or JSON for scripts.

Who held what, with which token, how long each hold waited and held, how it ended (released, lost with its
lease, broken by `lockd break`) and when. The sidecar answers ``GET /v1/history`` a page at a time, newest
first; this command follows the pages (``next``) until ``--limit`` finished holds are shown or the history
ends. The holds in progress that match come with the first page and are listed above the finished ones (``how``
is ``held``). Every page is validated against the API's own model (lockd.api.models.HoldsOut), as ``lockd
profile`` does, so ``--json`` is exactly what the API says, its pages joined.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import time
import urllib.parse

from lockd.api.models import HoldOut, HoldsOut
from lockd.api.routers.history import MAX_LIMIT
from lockd.cli.admin_client import add_url_argument, get_answer
from lockd.cli.arguments import positive_int
from lockd.cli.locks import align, human_duration
from lockd.cli.profile import seconds
from lockd.lock import validate_name

DEFAULT_LIMIT = 100


def since(text: str) -> float:
    """``--since``: a number is seconds before now (``300``: the last five minutes); anything else is an ISO 8601
    time (``2026-07-12T14:03``, ``2026-07-12 14:03:05+02:00``, ``2026-07-12T12:03:05Z``), local time when it has
    no offset. Returns the Unix time it names."""
    text = text.strip()
    try:
        ago = float(text)
    except ValueError:
        ago = None
    if ago is not None:
        if not math.isfinite(ago) or ago < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: seconds ago must be a finite number >= 0")
        return time.time() - ago
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text  # Python 3.10 reads no "Z"
    try:
        when = datetime.datetime.fromisoformat(iso).timestamp()
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither seconds ago (e.g. 300) nor an ISO 8601 time (e.g. 2026-07-12T14:03:00+02:00)"
        ) from None
    if when < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970")
    return when


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "history",
        help="recent holds of locks: owner, token, waited, held, how each ended",
        description="Recent holds of locks as the sidecar saw them, newest first, with the holds in progress "
        "above them. The sidecar keeps the last 100,000 holds or one hour of them by default.",
    )
    add_url_argument(parser)
    parser.add_argument("--name", help="only holds of this lock")
    parser.add_argument("--template", help="only holds of this template, as `lockd profile` shows it")
    parser.add_argument(
        "--since",
        type=since,
        metavar="WHEN",
        help="only holds that ended at or after WHEN: seconds ago (300 = the last five minutes) or an ISO 8601 "
        "time (2026-07-12T14:03:00+02:00; local time without an offset). Holds in progress are always listed",
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"show at most this many finished holds, following the sidecar's pages (default {DEFAULT_LIMIT})",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON (its pages joined) instead")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    name = validate_name(args.name) if args.name is not None else None
    found = read(args.url, name, args.template, args.since, args.limit)
    if args.json:
        print(json.dumps(found.model_dump(mode="json"), indent=2))
        return 0
    print(render_table(found.held + found.holds, found.kept))
    if found.next is not None:
        print(f"(older holds not shown: raise --limit to see more than {args.limit})")
    return 0


def read(
    url: str, name: str | None, template: str | None, since: float | None, limit: int, page_size: int = MAX_LIMIT
) -> HoldsOut:
    """Up to ``limit`` finished holds (newest first, in pages of at most ``page_size``) and the holds in progress.

    ``next`` of the answer is the cursor past the last hold shown, None when the history was read to its end.
    """
    filters = {"name": name, "template": template, "since": since}
    query = {key: value for key, value in filters.items() if value is not None}
    holds: list[HoldOut] = []
    held: list[HoldOut] | None = None
    cursor: str | None = None
    while True:
        page_query = {**query, "limit": min(page_size, limit - len(holds))}
        if cursor is not None:
            page_query["cursor"] = cursor
        page = get_answer(url, "/v1/history?" + urllib.parse.urlencode(page_query), HoldsOut)
        if held is None:
            held = page.held  # only the first page has them
        holds += page.holds
        cursor = page.next
        if cursor is None or len(holds) >= limit:
            return HoldsOut(holds=holds, held=held, next=cursor, kept=page.kept)


def duration(value: float | None) -> str:
    """Short ones in ms (``0.42ms``), up to a minute in seconds (``12.3s``), then ``5m03s``; ``-`` unknown."""
    if value is None:
        return "-"
    return seconds(value) if value < 60 else human_duration(value)


def moment(unix: float | None) -> str:
    """Local time to the millisecond with its UTC offset: ``2026-07-12 14:03:05.120+02:00``; ``-`` none."""
    if unix is None:
        return "-"
    return datetime.datetime.fromtimestamp(unix).astimezone().isoformat(sep=" ", timespec="milliseconds")


def render_table(holds: list[HoldOut], kept: int) -> str:
    """Columns: name, template, owner (host, pid, thread), token, waited, held, how it ended, when it ended.

    A stock tooz holder names nobody: its host shows as ``(tooz)``. ``kept``: the finished holds the sidecar
    keeps (all names), said when nothing matches."""
    if not holds:
        return f"no holds match (the sidecar keeps {kept} finished holds)"
    header = ("NAME", "TEMPLATE", "HOST", "PID", "THREAD", "TOKEN", "WAITED", "HELD", "HOW", "ENDED")
    rows = [header]
    for h in holds:
        owner = h.owner
        rows.append(
            (
                h.name,
                h.template,
                owner.host or ("(tooz)" if owner.member is None else "-"),
                str(owner.pid) if owner.pid is not None else "-",
                str(owner.thread) if owner.thread is not None else "-",
                str(h.token),
                duration(h.waited),
                duration(h.held),
                h.how,
                moment(h.ended),
            )
        )
    return align(rows)
