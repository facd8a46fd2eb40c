"""``lockd break NAME``: force-release a stale lock through the sidecar (audited there)."""

from __future__ import annotations

import argparse
import os
import sys

from lockd.admin_token import local_token, token_path
from lockd.cli.admin_client import AdminError, add_url_argument, quote, request
from lockd.config import read_token_file
from lockd.lock import validate_name
from lockd.options import default_state_dir


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "break",
        help="force-release a lock whoever holds it (the holder's is_still_owner() turns False)",
    )
    parser.add_argument("name", help="the lock name, as `lockd locks` shows it")
    add_url_argument(parser)
    parser.add_argument(
        "--admin-token",
        help="the sidecar's admin token (default $LOCKD_ADMIN_TOKEN, else --admin-token-file, else for a sidecar "
        "on this host the token it made in its state directory, $LOCKD_STATE_DIR/admin_token)",
    )
    parser.add_argument("--admin-token-file", help="file holding the admin token")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    name = validate_name(args.name)
    token = args.admin_token or os.environ.get("LOCKD_ADMIN_TOKEN")
    if not token and args.admin_token_file:
        token = read_token_file(args.admin_token_file)
    made_by_serve = None
    if not token:
        state_dir = default_state_dir()
        token = local_token(args.url, state_dir)
        made_by_serve = token_path(state_dir) if token else None
    try:
        request(args.url, "DELETE", "/v1/locks/" + quote(name), token=token)
    except AdminError as exc:
        if exc.status == 404:
            raise AdminError(f"lock {name!r} is not held; nothing to break", 404) from None
        if exc.status == 403 and made_by_serve is not None:
            # The file outlives a switch to a configured token: say where the refused token came from.
            raise AdminError(
                f"{exc}: the token came from {made_by_serve}, which lockd serve makes when it has no token "
                "configured; this sidecar uses another: pass --admin-token-file or set LOCKD_ADMIN_TOKEN",
                403,
            ) from None
        raise
    print(f"broke lock {name!r}", file=sys.stderr)
    return 0
