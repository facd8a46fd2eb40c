"""``lockd deadlocks``: the cycles in the wait-for graph now, and the lock to break to end each (lockd.api.waits)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from lockd.cli.admin_client import add_url_argument, request
from lockd.cli.locks import human_duration


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("deadlocks", help="list deadlocks across hosts and the lock to break for each")
    add_url_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _, answer = request(args.url, "GET", "/v1/deadlocks")
    answer = answer if isinstance(answer, dict) else {}
    print(json.dumps(answer, indent=2) if args.json else render(answer.get("deadlocks", []), time.time()))
    return 0


def render(deadlocks: list[dict[str, Any]], now: float) -> str:
    if not deadlocks:
        return "no deadlocks"
    lines = []
    for d in deadlocks:
        owners, locks = d.get("owners", []), d.get("locks", [])
        lines.append(f"deadlock {d.get('id')} for {human_duration(now - d.get('since', now))}:")
        for i, (owner, lock) in enumerate(zip(owners, locks, strict=False)):
            holder = owners[(i + 1) % len(owners)]
            lines.append(f"  {_who(owner)} waits for {lock!r}, held by {_who(holder)}")
        lines.append(f"  to end it: lockd break {d.get('suggested_break')}   (the youngest hold in the cycle)")
    return "\n".join(lines)


def _who(owner: dict[str, Any]) -> str:
    return f"{owner.get('member')} (host {owner.get('host')}, pid {owner.get('pid')}, thread {owner.get('thread')})"
