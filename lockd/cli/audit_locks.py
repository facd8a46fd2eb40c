"""``lockd audit-locks PATH...``: list the lock call sites in Python source and what the lockd patch changes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from lockd.audit import AuditReport, audit

COLUMNS = (
    ("LOCATION", 0),
    ("USE", 0),
    ("API", 0),
    ("LOCK NAME", 60),
    ("TODAY", 0),
    ("WITH PATCH", 0),
    ("SCOPE", 0),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit-locks",
        help="list lock call sites in driver source: host-local today, distributed with the lockutils patch?",
        description=(
            "Scan Python files or directories (e.g. an installed driver package) with ast, without importing "
            "them, and list oslo.concurrency, cinder utils/coordination and fasteners lock call sites, saying "
            "which are host-local today and which become distributed with LOCKD_PATCH_LOCKUTILS=1. SCOPE says "
            "which external locks the patch keeps host-local file locks (the lock scope, LOCKD_HOST_LOCAL_LOCKS)."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="Python file or directory to scan")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--host-local-locks",
        metavar="PATTERNS",
        help=(
            "judge SCOPE by these host-local lock patterns, written as LOCKD_HOST_LOCAL_LOCKS is "
            "('default,cinder-mine-*', 'none'); default: lockd's default patterns"
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from drivers_shim.scope import parse_host_local

    spec = args.host_local_locks
    report = audit(args.paths, None if spec is None else parse_host_local(spec, "--host-local-locks"))
    if args.json:
        print(json.dumps(as_json(report), indent=2))
    else:
        print(as_table(report))
    return 0


def as_json(report: AuditReport) -> dict[str, Any]:
    return {
        "sites": [dataclasses.asdict(site) for site in report.sites],
        "summary": report.summary(),
        "skipped": [{"path": path, "reason": reason} for path, reason in report.skipped],
    }


def as_table(report: AuditReport) -> str:
    rows = [
        (
            f"{site.path}:{site.line}",
            site.usage,
            site.api,
            site.lock_name or site.name,
            site.today,
            site.with_patch,
            site.scope or "-",
        )
        for site in report.sites
    ]
    lines = []
    if rows:
        widths = [
            min(max(len(title), *(len(row[i]) for row in rows)), cap or sys.maxsize)
            for i, (title, cap) in enumerate(COLUMNS)
        ]
        lines.append(_line([title for title, _ in COLUMNS], widths))
        lines.extend(_line(row, widths) for row in rows)
        lines.append("")
    s = report.summary()
    lines.append(
        f"{s['sites']} lock site(s) in {s['files_scanned']} file(s): {s['host_local']} host-local today, "
        f"{s['become_distributed']} become distributed with LOCKD_PATCH_LOCKUTILS=1, "
        f"{s['kept_host_local']} kept host-local by the lock scope, {s['not_covered']} not covered; "
        f"{s['in_process']} in-process (unchanged); {s['coordination']} coordination "
        f"(distributed when [coordination] backend_url = lockd+etcd3+http://...); {s['distributed']} lockd already"
    )
    for path, reason in report.skipped:
        lines.append(f"skipped {path}: {reason}")
    return "\n".join(lines)


def _line(cells: Any, widths: list[int]) -> str:
    out = []
    for cell, width in zip(cells, widths, strict=True):
        text = cell if len(cell) <= width else cell[: width - 3] + "..."
        out.append(text.ljust(width))
    return "  ".join(out).rstrip()
