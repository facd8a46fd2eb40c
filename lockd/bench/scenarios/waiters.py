"""Many waiters in one process: what queueing costs (connections, descriptors, RSS) and how fast they drain.

Issue 14. For each mode (OS threads; eventlet green threads, as cinder-volume runs), each N and each system
(lockd, stock tooz on the same etcd), one child process (lockd.bench.waiters_child) holds a lock while N
waiters queue on it, then releases; every waiter acquires and releases in turn. Measured while they wait:
established TCP connections from the process to etcd, open descriptors, RSS; after the release: the time
until all N are served and the handoff p50/p99 (each acquire minus the previous holder's release start).
Failures (EMFILE, a refused acquire) and lost held locks are counted, not raised.

The floor run lowers the child's descriptor soft limit (``setrlimit``, default 256) and queues 1,200 waiting
threads: issue 14 asks for all served, no held lock lost and at most 16 connections to etcd while they wait.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from lockd.bench.result import ScenarioResult
from lockd.bench.targets import TargetSpec

THREADS = "threads"
EVENTLET = "eventlet"
MODES = (THREADS, EVENTLET)
DEFAULT_COUNTS = (1, 100, 1000, 5000)

#: The issue-14 floor: this many waiting threads with the descriptor soft limit at FLOOR_FD_LIMIT.
FLOOR_WAITERS = 1200
FLOOR_FD_LIMIT = 256
FLOOR_MAX_CONNECTIONS = 16
#: Waiters that ran out of descriptors retry for ever today: the floor run stops waiting for them after this.
FLOOR_SERVE_TIMEOUT = 120.0


def run_child(
    spec: TargetSpec,
    waiters: int,
    green: bool,
    fd_limit: int | None,
    serve_timeout: float,
) -> dict[str, Any]:
    """One child run; a child that crashed or hung comes back as ``{"crashed": reason}``, never raised.

    The child says ``holding`` (its locks taken, no waiter yet) and ``waiting`` (every waiter queued), then
    waits for a line on stdin: in between this process samples the child from outside, because under a low
    descriptor limit the child could not even open ``/proc/self/fd`` to count its own.
    """
    queue_timeout = 60 + waiters * 0.05
    config = {
        "kind": spec.kind,
        "endpoint": spec.endpoint,
        "lease_ttl": spec.lease_ttl,
        "lock_dir": spec.lock_dir,
        "waiters": waiters,
        "eventlet": green,
        "fd_limit": fd_limit,
        "queue_timeout": queue_timeout,
        "serve_timeout": serve_timeout,
    }
    command = [sys.executable, "-m", "lockd.bench.waiters_child", json.dumps(config)]
    deadline = time.monotonic() + queue_timeout + serve_timeout + 60
    out: dict[str, Any] = {"waiters": waiters}
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        try:
            watcher = _Watcher(child.pid, int(spec.endpoint.rpartition(":")[2]))
            while True:
                message = _next_message(child, deadline)
                phase = message.pop("phase", None)
                if phase == "holding":
                    watcher.skip_port = int(message["inspector_port"])
                    out["rss_base_mb"] = watcher.rss_mb()
                elif phase == "waiting":
                    out.update(watcher.sample())
                    child.stdin.write("go\n")
                    child.stdin.flush()
                else:
                    out.update(message)
                    return out
        except (TimeoutError, EOFError, ValueError, OSError) as exc:
            child.kill()
            stderr = child.stderr.read().strip().splitlines() if child.stderr else []
            tail = f" ({stderr[-1][:200]})" if stderr else ""
            out["crashed"] = f"{type(exc).__name__}: {exc}{tail}"
            return out
        finally:
            if child.poll() is None:
                child.kill()


class _Watcher:
    """The child seen from outside (psutil): /proc/net/tcp lists the whole network namespace, psutil ties each
    socket to the process through its descriptors."""

    def __init__(self, pid: int, etcd_port: int) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self._port = etcd_port
        self.skip_port = 0  # the child's own inspection connection

    def rss_mb(self) -> float:
        return self._proc.memory_info().rss / 1e6

    def sample(self, times: int = 5, every: float = 0.2) -> dict[str, Any]:
        """Maxima over a second: connections to etcd, open descriptors, RSS."""
        conns, fds, rss = [], [], []
        for _ in range(times):
            conns.append(
                sum(
                    1
                    for c in self._proc.net_connections(kind="tcp")
                    if c.raddr and c.raddr.port == self._port and c.status == "ESTABLISHED"
                    and c.laddr.port != self.skip_port
                )
            )  # fmt: skip
            fds.append(self._proc.num_fds())
            rss.append(self.rss_mb())
            time.sleep(every)
        return {"conns_waiting": max(conns), "fds_waiting": max(fds), "rss_waiting_mb": max(rss)}


def _next_message(child: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
    """The child's next JSON line. Raises TimeoutError past ``deadline``, EOFError when it exited silently."""
    assert child.stdout is not None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the child did not finish in time (killed)")
        ready, _, _ = select.select([child.stdout], [], [], min(left, 1.0))
        if ready:
            line = child.stdout.readline()
            if not line:
                raise EOFError(f"the child exited (code {child.wait()}) without a result")
            return json.loads(line)


def run(
    specs: Sequence[TargetSpec],
    counts: Sequence[int],
    modes: Sequence[str],
    serve_timeout: float,
    floor_run: bool = True,
    say: Callable[[str], None] = lambda message: None,
) -> list[ScenarioResult]:
    """One ScenarioResult per (mode, N), lockd and stock tooz interleaved in it, then the floor run."""
    results = []
    for mode in modes:
        for n in counts:
            result = ScenarioResult(
                f"waiters/{mode}/{n}",
                f"{n} waiting {'green threads (eventlet)' if mode == EVENTLET else 'threads'} in one process",
                params={"mode": mode, "waiters": n, "serve_timeout_s": serve_timeout},
            )
            for spec in specs:
                say(f"waiters: {spec.kind}, {n} {mode} ...")
                result.metrics[spec.kind] = run_child(spec, n, mode == EVENTLET, None, serve_timeout)
            results.append(result)
    if floor_run:
        result = ScenarioResult(
            "waiters/fd-floor",
            f"{FLOOR_WAITERS} waiting threads with the descriptor soft limit at {FLOOR_FD_LIMIT} (issue 14 floor)",
            params={"mode": THREADS, "waiters": FLOOR_WAITERS, "fd_limit": FLOOR_FD_LIMIT},
        )
        for spec in specs:
            say(f"waiters: {spec.kind}, {FLOOR_WAITERS} threads at fd limit {FLOOR_FD_LIMIT} ...")
            floor_timeout = min(serve_timeout, FLOOR_SERVE_TIMEOUT)
            result.metrics[spec.kind] = run_child(spec, FLOOR_WAITERS, False, FLOOR_FD_LIMIT, floor_timeout)
        results.append(result)
    for result in results:
        for kind, metrics in result.metrics.items():
            _label(metrics)
            if "crashed" in metrics:
                result.notes.append(f"{kind}: {metrics['crashed']}")
        result.notes.append(
            "conns = established TCP connections from the process to etcd while the waiters wait (psutil); "
            "served s = holder's release -> last waiter released; lost = a lock held by the process (the one "
            "waited on, or a bystander) was gone or re-created in etcd while held"
        )
    return results


def _label(metrics: dict[str, Any]) -> None:
    """Table cells that read at a glance: ``served 1200/1200`` and ``held locks kept/LOST``."""
    metrics["served_of"] = f"{metrics.get('served', 0)}/{metrics['waiters']}"
    if "lock_lost" in metrics:
        metrics["held_locks"] = "LOST" if metrics["lock_lost"] else "kept"
