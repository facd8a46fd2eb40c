"""``lockd status KIND ID``: a resource's status (and recent transitions with --history)."""

from __future__ import annotations

import argparse
import json

from lockd.cli.admin_client import AdminError, add_url_argument, quote, request
from lockd.status.model import check_resource


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("status", help="show a resource's status, e.g. lockd status volume UUID")
    parser.add_argument("kind", help="resource kind, e.g. volume")
    parser.add_argument("id", help="resource id")
    add_url_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.add_argument("--history", action="store_true", help="also show recent transitions")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kind, id = check_resource(args.kind, args.id)
    path = f"/v1/status/{quote(kind)}/{quote(id)}"
    try:
        _, answer = request(args.url, "GET", path)
    except AdminError as exc:
        if exc.status == 404:
            raise AdminError(f"no status recorded for {kind} {id}", 404) from None
        raise
    history = request(args.url, "GET", path + "/history")[1] if args.history else None
    if args.json:
        print(json.dumps({**answer, **({"history": history["history"]} if history else {})}, indent=2))
        return 0
    print(f"{kind} {id}: {answer['status']} (revision {answer['revision']})")
    for item in (history or {}).get("history", []):
        print(f"  {item.get('at')}  {item.get('from')} -> {item.get('to')}  by {item.get('who')}")
    return 0
