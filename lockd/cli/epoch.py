"""``lockd epoch show|rotate|adopt``: the etcd cluster lifetime fencing tokens belong to (lockd.epoch).

After an etcd cluster is rebuilt from scratch, status stores refuse its tokens (reason ``epoch``) until an
operator who has made sure the old cluster is gone runs ``lockd epoch adopt``. After restoring a snapshot,
``lockd epoch rotate`` first (before clients connect), then ``adopt``. docs/operations.md has the procedure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
from typing import Any

from lockd import epoch
from lockd.errors import UsageError
from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url
from lockd.status.store import open_store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "epoch",
        help="show, rotate or adopt the etcd cluster lifetime that fencing tokens belong to",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    show = actions.add_parser("show", help="the cluster's epoch and every epoch it had")
    rotate = actions.add_parser("rotate", help="give the cluster a new epoch (after restoring a snapshot)")
    rotate.add_argument("--reason", required=True, help="why (kept in the epoch history)")
    adopt = actions.add_parser(
        "adopt", help="make a status store accept the cluster's current epoch (the old cluster must be gone)"
    )
    adopt.add_argument("--status-url", help="the store (default: $LOCKD_STATUS_URL, else the etcd store)")
    adopt.add_argument("--kind", help="only resources of this kind")
    adopt.add_argument("--id", help="only this resource (with --kind)")
    for action in (show, rotate, adopt):
        action.add_argument(
            "--backend-url", default=os.environ.get("LOCKD_BACKEND_URL"), help="lockd+etcd3+http://HOST:PORT"
        )
        action.add_argument("--json", action="store_true", help="print one JSON object")
        action.set_defaults(func=run)
    parser.set_defaults(func=lambda args: parser.error("say show, rotate or adopt"))


def run(args: argparse.Namespace) -> int:
    if not args.backend_url:
        raise UsageError("--backend-url (or $LOCKD_BACKEND_URL) is required")
    if getattr(args, "id", None) and not args.kind:
        raise UsageError("--id needs --kind")
    client = EtcdClient(parse_backend_url(args.backend_url))
    who = f"lockd epoch {args.action} by {os.environ.get('USER', 'unknown')}@{socket.gethostname()}"
    try:
        if args.action == "show":
            answer: dict[str, Any] = {
                "epoch": (epoch.current(client) or {}).get("epoch"),
                "history": epoch.history(client),
            }
        elif args.action == "rotate":
            previous, new = epoch.rotate(client, who, args.reason)
            answer = {"previous": previous, "epoch": new}
        else:
            current = epoch.ensure(client, who)
            store = open_store(args.status_url or os.environ.get("LOCKD_STATUS_URL"), etcd_client=client)
            try:
                changed = store.adopt_epoch(current, args.kind, args.id, who)
            finally:
                store.close()
            answer = {"epoch": current, "adopted": changed}
    finally:
        client.close()
    print(json.dumps(answer, indent=2) if args.json else _text(args.action, answer))
    return 0


def _text(action: str, answer: dict[str, Any]) -> str:
    if action == "rotate":
        return f"epoch {answer['epoch']} (was {answer['previous']}): now run `lockd epoch adopt` on each status store"
    if action == "adopt":
        return f"epoch {answer['epoch']} adopted for {answer['adopted']} resource(s)"
    lines = [f"epoch {answer['epoch'] or '(none yet: no lockd session has run on this cluster)'}"]
    for r in answer["history"]:
        when = datetime.datetime.fromtimestamp(r["at"], datetime.timezone.utc).isoformat(timespec="seconds")
        lines.append(f"  {when}  {r['epoch']}  {r['who']}: {r['reason']}")
    return "\n".join(lines)
