"""``lockd profile``: contention per lock template (lockd.api.profile), as a table for people or JSON for scripts.

The answer is validated against the API's own model (lockd.api.models.ProfileOut), so the table and
``--json`` show exactly what ``GET /v1/profile`` says, and a server of another shape fails loudly.
"""

from __future__ import annotations

import argparse
import json

from lockd.api.models import ProfileOut, TemplateOut
from lockd.cli.admin_client import add_url_argument, get_answer
from lockd.cli.arguments import positive_int
from lockd.cli.locks import align

#: What ``--sort`` accepts: the column a table is ordered by, largest first (the API's own order by default).
SORT_KEYS = ("waiters", "acquisitions", "wait_p99", "hold_p99")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "profile", help="contention per lock template: acquisitions, wait and hold p50/p99, waiters now"
    )
    add_url_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    parser.add_argument("--sort", choices=SORT_KEYS, help="order the table by this column, largest first")
    parser.add_argument("--top", type=positive_int, help="show only the first N templates")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    profile = get_answer(args.url, "/v1/profile", ProfileOut)
    rows = profile.templates
    if args.sort:
        rows = sorted(rows, key=lambda row: getattr(row, args.sort) or 0.0, reverse=True)
    if args.top:
        rows = rows[: args.top]
    if args.json:
        print(json.dumps(ProfileOut(templates=rows, samples=profile.samples).model_dump(mode="json"), indent=2))
    else:
        print(render_table(rows))
    return 0


def seconds(value: float | None) -> str:
    """A duration to three significant places: ``0.42ms``, ``12.3ms``, ``1.50s``, ``95.0s``; ``-`` unknown."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.3g}ms"
    return f"{value:.3g}s"


def render_table(rows: list[TemplateOut]) -> str:
    """Columns: template, acquisitions, wait p50 / p99, hold p50 / p99, waiters now."""
    if not rows:
        return "no lock acquisitions seen yet"
    header = ("TEMPLATE", "ACQUISITIONS", "WAIT P50", "WAIT P99", "HOLD P50", "HOLD P99", "WAITERS")
    table = [header] + [
        (
            r.template,
            str(r.acquisitions),
            seconds(r.wait_p50),
            seconds(r.wait_p99),
            seconds(r.hold_p50),
            seconds(r.hold_p99),
            str(r.waiters),
        )
        for r in rows
    ]
    return align(table)
