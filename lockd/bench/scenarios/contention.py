"""N processes contending for one name: throughput, handoff latency, fairness, max wait, and a counter.

Each worker process (``multiprocessing`` spawn, so nothing is inherited) loops ``cycles`` times:
request, acquire, read a shared counter file, sleep ``hold``, write counter+1, release. A lock that lets two
holders in loses increments, so ``counter_exact`` is a correctness check, not a statistic. Times are
``time.monotonic()``, which on Linux is one clock for all processes, so holds from different workers can be
ordered and compared.

Definitions:
- handoff: next holder's acquire returning minus the previous holder starting its release, counted only when
  that next holder was already waiting (a real hand-over, not an idle lock);
- Jain fairness: over per-worker acquisitions inside the contended window, i.e. until the first worker finishes
  its cycles (after that fewer workers compete, and over the whole run every worker has ``cycles``);
- throughput: all acquisitions over the time from the first request to the last release;
- etcd CPU per 1,000 acquisitions: the etcd process's user+system CPU seconds from the start barrier until the
  last worker finished, per 1,000 acquisitions; only for the etcd the bench started itself (else "n/a").
  Stock tooz's waiters poll etcd while they wait, lockd's watch: this is where that shows;
- a commit (issue 25's unit for a handoff): the p50 of a put-if-absent txn on one kept-alive ``http.client``
  connection to the same etcd with nothing else running (the etcd-floor target's acquire, a delete after each
  not timed), ``COMMIT_SAMPLES`` of them, half before the targets and half after; each etcd target's handoff
  p50 and p99 are also given in commits (``handoff_p50_commits``, ``handoff_p99_commits``).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lockd.bench import etcd_admin
from lockd.bench.etcd import cpu_seconds
from lockd.bench.result import ScenarioResult
from lockd.bench.stats import jain, latency_summary
from lockd.bench.targets import ETCD_LOCKS, MUTEX, FloorBackend, TargetSpec

# (worker, requested, acquired, release_started, released)
Hold = tuple[int, float, float, float, float]

#: Put-if-absent txns timed for the run's commit (half before the targets, half after), and warm-up ones before.
COMMIT_SAMPLES = 300
COMMIT_WARMUP = 20
#: Issue 25's floors for lockd's handoff, in this run's commits.
HANDOFF_P50_COMMITS = 1.5
HANDOFF_P99_COMMITS = 4.0


def _bump(counter: Path, hold: float) -> None:
    """Read-sleep-write: the increment is lost if another holder runs in between."""
    value = int(counter.read_text() or "0")
    time.sleep(hold)
    counter.write_text(str(value + 1))


def worker(
    spec: TargetSpec,
    name: str,
    index: int,
    cycles: int,
    hold: float,
    counter: str,
    start: Any,
    results: Any,
    done: Any,
) -> None:
    """One contender (runs in a spawned process). Puts ``(index, holds, error)`` on ``results``."""
    backend = None
    try:
        backend = spec.open(f"bench-{spec.kind}-w{index}-{os.getpid()}")
        lock = backend.lock(name)
        start.wait(180)  # a Barrier: every worker is connected before anyone requests the lock
        holds: list[Hold] = []
        path = Path(counter)
        for _ in range(cycles):
            requested = time.monotonic()
            if not lock.acquire(blocking=True):
                raise RuntimeError("a blocking acquire returned False")
            acquired = time.monotonic()
            _bump(path, hold)
            release_started = time.monotonic()
            lock.release()
            holds.append((index, requested, acquired, release_started, time.monotonic()))
        results.put((index, holds, None))
        done.wait(120)  # keep the coordinator alive until the parent has counted leases
    except BaseException:
        results.put((index, None, traceback.format_exc(limit=5)))
        start.abort()  # do not keep the others (and the parent) waiting for this worker
    finally:
        if backend is not None:
            try:
                backend.close()
            except Exception:
                pass


def analyse(holds: list[Hold], processes: int) -> tuple[dict[str, Any], list[float], list[int]]:
    """Metrics, handoff samples (seconds) and per-worker counts in the contended window."""
    holds = sorted(holds, key=lambda h: h[2])
    pairs = list(zip(holds, holds[1:], strict=False))  # each hold with the one after it
    handoffs = [nxt[2] - cur[3] for cur, nxt in pairs if nxt[1] < cur[3]]
    overlaps = sum(1 for cur, nxt in pairs if nxt[2] < cur[3])
    last_per_worker: dict[int, float] = {}
    for h in holds:
        last_per_worker[h[0]] = max(last_per_worker.get(h[0], 0.0), h[4])
    window_end = min(last_per_worker.values())
    counts = [sum(1 for h in holds if h[0] == w and h[2] <= window_end) for w in range(processes)]
    waits = [h[2] - h[1] for h in holds]
    elapsed = max(h[4] for h in holds) - min(h[1] for h in holds)
    handoff = latency_summary(handoffs)
    metrics = {
        "acquisitions": len(holds),
        "elapsed_s": elapsed,
        "throughput_per_s": len(holds) / elapsed,
        "handoff_p50_ms": handoff["p50_ms"],
        "handoff_p90_ms": handoff["p90_ms"],
        "handoff_p99_ms": handoff["p99_ms"],
        "handoffs": handoff["n"],
        "wait_p50_ms": latency_summary(waits)["p50_ms"],
        # where a cycle's time goes: inside the lock (counter + sleep) and in the release call itself
        "hold_p50_ms": latency_summary([h[3] - h[2] for h in holds])["p50_ms"],
        "release_p50_ms": latency_summary([h[4] - h[3] for h in holds])["p50_ms"],
        "max_wait_ms": max(waits) * 1000.0,
        "jain": jain(counts),
        "overlaps": overlaps,
    }
    return metrics, handoffs, counts


def run_target(
    spec: TargetSpec,
    processes: int,
    cycles: int,
    hold: float,
    target: Callable[..., None] = worker,
    etcd_pid: int | None = None,
) -> tuple[dict[str, Any], list[float], list]:
    """One target's contention loop: (metrics, handoff samples in seconds, per-worker counts in the window).

    ``target`` runs in each spawned process with :func:`worker`'s arguments; another one (a module-level function,
    so it pickles) may wrap :func:`worker` to trace it (bench/handoff_breakdown.py). ``etcd_pid``: the bench's
    own etcd, whose CPU time is read around the loop (None: ``etcd_cpu_per_1000`` is "n/a").
    Raises RuntimeError when a worker fails or hangs.
    """
    ctx = multiprocessing.get_context("spawn")
    start, done, results = ctx.Barrier(processes + 1), ctx.Event(), ctx.Queue()
    name = f"bench-contention-{spec.kind}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="lockd-bench-counter-") as tmp:
        counter = Path(tmp) / "counter"
        counter.write_text("0")
        leases_before = etcd_admin.lease_ids(spec.endpoint) if spec.kind in ETCD_LOCKS else set()
        procs = [
            ctx.Process(
                target=target,
                args=(spec, name, i, cycles, hold, str(counter), start, results, done),
                daemon=True,
            )
            for i in range(processes)
        ]
        for p in procs:
            p.start()
        try:
            cpu: list[float | None] = []
            _wait_for_workers(spec.kind, procs, start, results, on_ready=lambda: cpu.append(cpu_seconds(etcd_pid)))
            deadline = time.monotonic() + 120 + processes * cycles * 0.1
            holds: list = []
            errors: list[str] = []
            for _ in procs:
                try:
                    _, got, error = results.get(timeout=max(1.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(f"{spec.kind}: contention workers did not finish in time") from None
                if error:
                    errors.append(error.strip().splitlines()[-1])
                else:
                    holds.extend(got)
            cpu.append(cpu_seconds(etcd_pid))
            if errors:
                raise RuntimeError(f"{spec.kind}: contention worker failed: {errors[0]}")
            leases_live = len(etcd_admin.lease_ids(spec.endpoint) - leases_before) if spec.kind in ETCD_LOCKS else None
        finally:
            done.set()
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
                    p.join(5)
        metrics, handoffs, counts = analyse(holds, processes)
        metrics["counter"] = int(counter.read_text())
        metrics["counter_expected"] = processes * cycles
        metrics["counter_exact"] = metrics["counter"] == processes * cycles
        if leases_live is not None:
            metrics["leases_live"] = leases_live
        if len(cpu) == 2 and cpu[0] is not None and cpu[1] is not None:
            metrics["etcd_cpu_s"] = cpu[1] - cpu[0]
            metrics["etcd_cpu_per_1000"] = (cpu[1] - cpu[0]) * 1000.0 / len(holds)
        else:
            metrics["etcd_cpu_per_1000"] = "n/a"
    return metrics, handoffs, counts


def _wait_for_workers(
    kind: str, procs: list[Any], start: Any, results: Any, on_ready: Callable[[], object] | None = None
) -> None:
    """Release the start barrier once every worker waits at it; fail fast when one died on the way.

    ``on_ready`` is called just before the release, when every worker is connected and none has started.
    """
    deadline = time.monotonic() + 180
    while start.n_waiting < len(procs) and not start.broken:
        dead = [p for p in procs if p.exitcode is not None]
        if dead or time.monotonic() > deadline:
            start.abort()
            break
        time.sleep(0.02)  # polling the barrier: a dead worker would never arrive to break it
    if on_ready is not None:
        on_ready()
    try:
        start.wait(10)
    except threading.BrokenBarrierError:
        try:
            reason = results.get(timeout=2)[2].strip().splitlines()[-1]
        except (queue.Empty, AttributeError, IndexError):
            reason = "a worker exited before reaching the start (see its stderr)"
        raise RuntimeError(f"{kind}: contention workers did not all start: {reason}") from None


def commit_seconds(endpoint: str, samples: int, warmup: int = COMMIT_WARMUP) -> list[float]:
    """Seconds per put-if-absent txn on one kept-alive connection (each followed by an untimed delete).

    The same measure as bench/handoff_breakdown.py's "commit": the etcd-floor target's acquire, nothing of a lock.
    Raises RuntimeError when a put-if-absent fails (its key was left over).
    """
    backend = FloorBackend(endpoint)
    lock = backend.lock(f"commit-{uuid.uuid4().hex[:8]}")
    seconds: list[float] = []
    try:
        for i in range(warmup + samples):
            started = time.perf_counter()
            if not lock.acquire():
                raise RuntimeError("commit floor: the put-if-absent failed (key left over?)")
            put = time.perf_counter()
            lock.release()
            if i >= warmup:
                seconds.append(put - started)
    finally:
        backend.close()
    return seconds


def run(
    specs: list[TargetSpec],
    processes: int,
    cycles: int,
    hold: float,
    etcd_pid: int | None = None,
    commit_samples: int = COMMIT_SAMPLES,
) -> ScenarioResult:
    """Run the contention loop for each target in turn. Raises RuntimeError when a worker fails or hangs.

    ``etcd_pid`` is the bench's own etcd, for etcd's CPU per 1,000 acquisitions (None: reported as "n/a").
    ``commit_samples`` put-if-absent txns give the run's commit (0: none, and no handoff in commits).
    """
    result = ScenarioResult(
        "contention",
        f"{processes} processes x {cycles} cycles on one name, {hold * 1000:g} ms hold",
        params={"processes": processes, "cycles": cycles, "hold_ms": hold * 1000, "commit_samples": commit_samples},
    )
    endpoint = specs[0].endpoint if specs else ""
    commits = commit_seconds(endpoint, commit_samples // 2) if commit_samples and endpoint else []
    counts_by_target: dict[str, list[int]] = {}
    for spec in specs:
        metrics, handoffs, counts = run_target(spec, processes, cycles, hold, etcd_pid=etcd_pid)
        result.metrics[spec.kind] = metrics
        result.samples[spec.kind] = handoffs
        counts_by_target[spec.kind] = counts
    if commits:
        commits += commit_seconds(endpoint, commit_samples - commit_samples // 2)
        commit = latency_summary(commits)
        result.details["commit"] = commit
        for kind, metrics in result.metrics.items():
            if kind in ETCD_LOCKS:
                metrics["handoff_p50_commits"] = metrics["handoff_p50_ms"] / commit["p50_ms"]
                metrics["handoff_p99_commits"] = metrics["handoff_p99_ms"] / commit["p50_ms"]
    result.details["window_counts"] = counts_by_target
    result.notes.append(
        "handoff = release start -> next waiter's acquire; Jain over per-worker acquisitions until the first "
        "worker finished; leases_live = etcd leases added while all workers were still connected; etcd CPU = the "
        "bench's etcd process's user+system seconds from the start barrier to the last worker's end, per 1,000 "
        "acquisitions (n/a: an etcd the bench did not start)"
    )
    if commits:
        result.notes.append(
            f"commits = handoff over this run's commit: a put-if-absent txn p50 on one kept-alive connection, "
            f"{commit['p50_ms']:.3f} ms (p99 {commit['p99_ms']:.3f} ms, {commit['n']} txns, half before the targets "
            "and half after)"
        )
    if MUTEX in result.metrics:
        result.notes.append(
            "etcd-mutex = etcd's own concurrency.Mutex algorithm, request for request, over the same gateway "
            "(lockd.bench.etcd_mutex): the handoff etcd's Mutex pays in this loop"
        )
    return result
