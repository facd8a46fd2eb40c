"""``lockd`` entry point: argparse, and the one place errors become exit codes.

Exit codes: 0 success, 1 runtime failure (one line on stderr), 2 usage error (one line on stderr).
Each subcommand module has ``register(subparsers)`` which adds its parser and sets ``func`` to a
function ``(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lockd.errors import LockdError, UsageError

#: Subcommand modules under lockd.cli, in the order ``lockd --help`` lists them.
SUBCOMMANDS = (
    "serve", "locks", "deadlocks", "profile", "history", "break_lock", "status", "epoch", "bench", "audit_locks",
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints the whole usage; one line is enough
        self.exit(2, f"lockd: error: {message} (see lockd --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lockd", description="Distributed locks for OpenStack Cinder on etcd.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMANDS:
        importlib.import_module(f"lockd.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"lockd: error: {exc}", file=sys.stderr)
        return 2
    except (LockdError, OSError) as exc:
        print(f"lockd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
