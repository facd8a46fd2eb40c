"""``lockd bench``: measure lockd against stock tooz (and the oslo file lock, and raw etcd) on one etcd.

Prints a table with p50/p99 and ratios to stock tooz and the floors of issue 2 as PASS/FAIL. The floors are
information: the exit code is 0 whatever they say, 2 for bad arguments, 1 when the run itself failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
from typing import Any

from tooz import ToozError

from lockd.cli.arguments import positive_int
from lockd.errors import UsageError

_SCENARIOS = ("uncontended", "contention", "leases", "crash", "status", "fleet")
_LONG_SCENARIOS = ("waiters", "admin-scale")  # minutes at their default sizes: only when named


def _counts(text: str) -> tuple[int, ...]:
    """``1,100,1000``: positive whole numbers separated by commas."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every count must be at least 1")
    return values


def _seconds(minimum: float) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not minimum <= value < math.inf:
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= {minimum:g}")
        return value

    return parse


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark lockd against stock tooz on the same etcd",
        description="Run lockd and stock tooz (etcd3+http) side by side on one etcd, plus the oslo file lock "
        "and the raw etcd floors (two txns per lock cycle, one per status transition). Without --backend-url a "
        "private etcd is started on loopback.",
    )
    p.add_argument("--backend-url", help="lockd+etcd3+http://HOST:PORT of an etcd to use (default: start one)")
    p.add_argument(
        "--scenario", action="append", choices=_SCENARIOS + _LONG_SCENARIOS, metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(_SCENARIOS)} (default: these), "
        f"and the long ones, run only when named: {', '.join(_LONG_SCENARIOS)}",
    )  # fmt: skip
    p.add_argument("--processes", type=positive_int, default=8, help="contending processes (default 8)")
    p.add_argument("--cycles", type=positive_int, default=100, help="cycles per contending process (default 100)")
    p.add_argument("--hold-ms", type=_seconds(0.0), default=1.0, help="time each holder holds (default 1 ms)")
    p.add_argument("--ops", type=positive_int, default=1000, help="uncontended cycles per target (default 1000)")
    p.add_argument(
        "--lease-cycles", type=positive_int, default=1000, help="cycles before counting leases (default 1000)"
    )
    p.add_argument(
        "--lease-ttl", type=_seconds(2.0), default=10.0,
        help="lease TTL for lockd (lease_ttl) and stock tooz (lock_timeout) alike (default 10 s)",
    )  # fmt: skip
    p.add_argument("--status-ops", type=positive_int, default=500, help="status transitions (default 500)")
    p.add_argument("--status-racers", type=positive_int, default=32, help="processes in the status race (32)")
    p.add_argument("--status-rounds", type=positive_int, default=5, help="status race rounds (default 5)")
    p.add_argument(
        "--waiters", type=_counts, default=(1, 100, 1000, 5000), metavar="N,N,...",
        help="waiters scenario: waiting threads per process, one run each (default 1,100,1000,5000)",
    )  # fmt: skip
    p.add_argument(
        "--waiter-mode", action="append", choices=("threads", "eventlet"),
        help="waiters scenario: OS threads and/or eventlet green threads (repeatable; default both)",
    )  # fmt: skip
    p.add_argument(
        "--no-fd-floor", action="store_true",
        help="waiters scenario: skip the run of 1,200 waiters under a descriptor limit of 256",
    )  # fmt: skip
    p.add_argument(
        "--serve-timeout", type=_seconds(1.0), default=300.0,
        help="waiters scenario: how long to wait for all waiters to be served (default 300 s)",
    )  # fmt: skip
    p.add_argument(
        "--admin-locks", type=positive_int, default=100_000,
        help="admin-scale scenario: locks held while lockd serve is measured (default 100000)",
    )  # fmt: skip
    p.add_argument(
        "--fleet-processes", type=positive_int, default=16, help="fleet scenario: worker processes (default 16)"
    )
    p.add_argument(
        "--fleet-threads", type=positive_int, default=2,
        help="fleet scenario: threads per process, each on a lock name of its own (default 2)",
    )  # fmt: skip
    p.add_argument(
        "--fleet-seconds", type=_seconds(0.1), default=3.0,
        help="fleet scenario: counted seconds per target, split over the rounds (default 3)",
    )  # fmt: skip
    p.add_argument(
        "--fleet-warmup", type=_seconds(0.0), default=0.5,
        help="fleet scenario: seconds run but not counted at the start of each round (default 0.5)",
    )  # fmt: skip
    p.add_argument(
        "--fleet-rounds", type=positive_int, default=3,
        help="fleet scenario: rounds in which the targets take turns, order rotated (default 3)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    p.add_argument("--plot", metavar="FILE.png", help="also write a PNG of latency distributions and fairness")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lockd.bench import runner

    if args.plot and not args.plot.lower().endswith(".png"):
        raise UsageError(f"--plot {args.plot!r}: the file name must end in .png")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'lockd[bench]'") from None
    if args.backend_url:
        from lockd.bench.targets import parse_endpoint

        parse_endpoint(args.backend_url)  # bad URL: exit 2 before anything starts
    chosen = tuple(dict.fromkeys(args.scenario)) if args.scenario else _SCENARIOS
    config = runner.BenchConfig(
        backend_url=args.backend_url,
        scenarios=tuple(s for s in runner.SCENARIOS + runner.EXTRA_SCENARIOS if s in chosen),
        processes=args.processes,
        cycles=args.cycles,
        hold_ms=args.hold_ms,
        ops=args.ops,
        lease_cycles=args.lease_cycles,
        lease_ttl=args.lease_ttl,
        status_ops=args.status_ops,
        status_racers=args.status_racers,
        status_rounds=args.status_rounds,
        waiters=args.waiters,
        waiter_modes=tuple(dict.fromkeys(args.waiter_mode)) if args.waiter_mode else ("threads", "eventlet"),
        waiters_fd_floor=not args.no_fd_floor,
        serve_timeout=args.serve_timeout,
        admin_locks=args.admin_locks,
        fleet_processes=args.fleet_processes,
        fleet_threads=args.fleet_threads,
        fleet_seconds=args.fleet_seconds,
        fleet_warmup=args.fleet_warmup,
        fleet_rounds=args.fleet_rounds,
    )
    try:
        report = runner.run(config, progress=not args.quiet and not args.json, log=sys.stderr)
    except UsageError:
        raise
    except (RuntimeError, ToozError, OSError, http.client.HTTPException) as exc:
        # stock tooz's and the raw client's failures too, not only lockd's: one line, exit 1, no traceback
        print(f"lockd: bench failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    if args.plot:
        from lockd.bench.plot import write_plot

        write_plot(report, args.plot)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=_json_default))
    else:
        print(report.table())
        if args.plot:
            print(f"\nplot written to {args.plot}")
    return 0


def _json_default(value: Any) -> Any:
    return str(value)
