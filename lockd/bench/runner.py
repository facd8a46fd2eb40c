"""Run the chosen scenarios against every target on one etcd, starting a private etcd when none is given."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from lockd.bench import etcd_admin
from lockd.bench.etcd import LocalEtcd
from lockd.bench.report import Report
from lockd.bench.result import ScenarioResult
from lockd.bench.targets import FLOOR, LOCKD, MUTEX, OSLO, TOOZ, TargetSpec, parse_endpoint

#: Scenario names in the order they run by default; ``--scenario`` picks a subset.
SCENARIOS = ("uncontended", "contention", "leases", "crash", "status", "fleet")
#: Long scenarios (many minutes at their default sizes) that run only when named.
EXTRA_SCENARIOS = ("waiters", "admin-scale")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Everything one run needs; the CLI fills it from its arguments."""

    backend_url: str | None = None
    scenarios: tuple[str, ...] = SCENARIOS
    processes: int = 8
    cycles: int = 100
    hold_ms: float = 1.0
    commit_samples: int = 300  # the contention scenario's commit: put-if-absent txns timed (0: none)
    ops: int = 1000
    lease_cycles: int = 1000
    lease_ttl: float = 10.0
    status_ops: int = 500
    status_racers: int = 32
    status_rounds: int = 5
    waiters: tuple[int, ...] = (1, 100, 1000, 5000)
    waiter_modes: tuple[str, ...] = ("threads", "eventlet")
    waiters_fd_floor: bool = True
    serve_timeout: float = 300.0
    admin_locks: int = 100_000
    fleet_processes: int = 16
    fleet_threads: int = 2
    fleet_seconds: float = 3.0
    fleet_warmup: float = 0.5
    fleet_rounds: int = 3


@contextlib.contextmanager
def _etcd(config: BenchConfig) -> Iterator[tuple[str, str, int | None]]:
    """(endpoint, how it was obtained, pid): the given backend, or a private etcd stopped on exit.

    The pid is known only for the private etcd; a given etcd's CPU is never guessed at (lockd.bench.etcd).
    """
    if config.backend_url:
        yield parse_endpoint(config.backend_url), "given by --backend-url", None
        return
    with LocalEtcd() as etcd:
        yield etcd.endpoint, f"private etcd started by the bench ({etcd.binary})", etcd.pid


def run(config: BenchConfig, progress: bool = False, log: TextIO = sys.stderr) -> Report:
    """Run every scenario in ``config.scenarios`` and return the report (floors checked, nothing printed).

    Raises:
        UsageError: a bad backend URL.
        BackendError: the private etcd would not start.
        RuntimeError: a scenario failed (a worker crashed, an uncontended acquire failed).
    """

    def say(message: str) -> None:
        if progress:
            print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=log, flush=True)

    with (
        _etcd(config) as (endpoint, origin, etcd_pid),
        tempfile.TemporaryDirectory(prefix="lockd-bench-locks-") as lock_dir,
    ):
        kinds = (LOCKD, TOOZ, OSLO, FLOOR, MUTEX)
        spec = {kind: TargetSpec(kind, endpoint, config.lease_ttl, lock_dir) for kind in kinds}
        report = Report(
            machine={
                "nproc": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "etcd_version": etcd_admin.server_version(endpoint),
                "etcd": origin,
            },
            config=dataclasses.asdict(config),
        )
        for name in config.scenarios:
            say(f"scenario {name} ...")
            started = time.monotonic()
            results = _run_scenario(name, config, spec, etcd_pid, say)
            for result in results:
                result.params.setdefault("duration_s", round(time.monotonic() - started, 1))
            report.scenarios.extend(results)
        report.check_floors()
        return report


def _run_scenario(
    name: str, config: BenchConfig, spec: dict[str, TargetSpec], etcd_pid: int | None, say: Callable[[str], None]
) -> list[ScenarioResult]:
    if name == "waiters":
        from lockd.bench.scenarios import waiters

        return waiters.run(
            [spec[LOCKD], spec[TOOZ]],
            config.waiters,
            config.waiter_modes,
            config.serve_timeout,
            floor_run=config.waiters_fd_floor,
            say=say,
        )
    if name == "admin-scale":
        from lockd.bench.scenarios import admin_scale

        return [admin_scale.run(spec[LOCKD].endpoint, config.admin_locks, say=say)]
    return [_run_classic(name, config, spec, etcd_pid)]


def _run_classic(name: str, config: BenchConfig, spec: dict[str, TargetSpec], etcd_pid: int | None) -> ScenarioResult:
    if name == "uncontended":
        from lockd.bench.scenarios import uncontended

        return uncontended.run([spec[LOCKD], spec[TOOZ], spec[OSLO], spec[FLOOR]], config.ops)
    if name == "contention":
        from lockd.bench.scenarios import contention

        # etcd-mutex next to lockd, before stock tooz, whose leases (one per attempt, never revoked) stay in etcd
        targets = [spec[LOCKD], spec[MUTEX], spec[TOOZ], spec[OSLO]]
        return contention.run(
            targets, config.processes, config.cycles, config.hold_ms / 1000.0, etcd_pid, config.commit_samples
        )
    if name == "leases":
        from lockd.bench.scenarios import leases

        return leases.run([spec[LOCKD], spec[TOOZ]], config.lease_cycles)
    if name == "crash":
        from lockd.bench.scenarios import crash

        return crash.run([spec[LOCKD], spec[TOOZ]], config.lease_ttl)
    if name == "status":
        from lockd.bench.scenarios import status

        return status.run(spec[LOCKD], config.status_ops, config.status_racers, config.status_rounds)
    if name == "fleet":
        from lockd.bench.scenarios import fleet

        # stock tooz last: the leases it never revokes stay in etcd until their TTL, loading the targets after it
        return fleet.run(
            [spec[LOCKD], spec[FLOOR], spec[TOOZ]],
            config.fleet_processes,
            config.fleet_threads,
            config.fleet_seconds,
            config.fleet_warmup,
            config.fleet_rounds,
            etcd_pid,
        )
    raise ValueError(f"unknown scenario {name!r}")
