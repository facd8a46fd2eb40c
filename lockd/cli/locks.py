"""``lockd locks``: who holds what, as a table for people or JSON for scripts."""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from typing import Any

from lockd.cli.admin_client import add_url_argument, request


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("locks", help="list held locks (holder, host, pid, held for, TTL left, waiters)")
    add_url_argument(parser)
    parser.add_argument("--prefix", default="", help="only locks whose name starts with this")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = "/v1/locks" + ("?" + urllib.parse.urlencode({"prefix": args.prefix}) if args.prefix else "")
    _, answer = request(args.url, "GET", path)
    locks = answer.get("locks", []) if isinstance(answer, dict) else []
    if args.json:
        print(json.dumps({"locks": locks}, indent=2))
    else:
        print(render_table(locks, time.time()))
    return 0


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d{int(seconds % 86400 // 3600):02d}h"


def render_table(locks: list[dict[str, Any]], now: float) -> str:
    """Columns: name, holder, host, pid, held for, TTL left, waiters (stock tooz holders show as "(tooz)")."""
    if not locks:
        return "no locks held"
    header = ("NAME", "HOLDER", "HOST", "PID", "HELD FOR", "TTL LEFT", "WAITERS")
    rows = [header]
    for lock in locks:
        holder = lock.get("holder") or {}
        acquired = lock.get("acquired_at")
        rows.append(
            (
                str(lock.get("name", "")),
                str(holder.get("member") or "(tooz)"),
                str(holder.get("host") or "-"),
                str(holder.get("pid") or "-"),
                human_duration(now - acquired if isinstance(acquired, (int, float)) else None),
                human_duration(lock.get("ttl_remaining")),
                str(lock.get("waiters", 0)),
            )
        )
    return align(rows)


def align(rows: list[tuple[str, ...]]) -> str:
    """``rows`` (a header first) as text columns, each as wide as its widest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
