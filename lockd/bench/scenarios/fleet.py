"""A fleet without contention: P processes x T threads, each thread on a lock name of its own (issue 25).

Cinder runs several services per host, each with many threads, and most of their locks are on distinct
volumes: what matters there is how many acquire+release cycles the whole fleet gets through per second, and
how much of etcd's raw capacity the lock protocol leaves on the table. So:

- ``processes`` worker processes (``multiprocessing`` spawn) are started once and run every target in turn;
  per target each opens one backend shared by its ``threads`` threads (one coordinator per service, as Cinder
  has), except the raw floor, whose threads have one ``http.client`` connection each (it is not thread-safe);
- each thread loops ``acquire(blocking=True)`` + ``release()`` on its own name; after a few cycles to open
  connections every worker waits at a start barrier, and the bench process then hands them one start instant
  (``time.monotonic()``, one clock for all processes on Linux) so all threads begin at once;
- the first ``warmup`` seconds are not counted; a cycle counts when it starts after the warm-up and ends
  before the end of the round's counted time. Aggregate acquisitions/s = counted cycles / counted seconds;
- the targets take turns in ``rounds`` rounds of ``seconds / rounds`` counted seconds each, their order rotated
  every round (as the uncontended scenario interleaves its batches): on a small shared machine a burst of
  somebody else's load then falls on every target alike instead of on whichever ran at that moment.

The raw floor (``etcd-floor``) is the same loop with two txns straight to the JSON gateway, put-if-absent and
delete on a key per thread (lockd.bench.targets.FloorLock): the least any etcd lock can cost at that
concurrency. Issue 25's floor is lockd >= FLOOR_RATIO x the raw floor's aggregate at 16 processes.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import traceback
import uuid
from typing import Any

from lockd.bench.etcd import cpu_seconds
from lockd.bench.result import ScenarioResult
from lockd.bench.stats import jain, latency_summary
from lockd.bench.targets import FLOOR, BenchLock, TargetSpec

#: Issue 25: lockd's aggregate at least this fraction of the raw two-txn floor's.
FLOOR_RATIO = 0.8
#: Cycles each thread runs before the start barrier: connections, leases and imports are not on the clock.
WARM_CYCLES = 3
#: From the start barrier to the start instant: time for every worker to read it and wake its threads.
START_DELAY = 0.3

# What one worker answers per round: (worker index, per-thread counted cycles, cycle latencies in s,
# the process's own CPU seconds in the counted window, error)
Answer = tuple[int, list[int], list[float], float, str | None]


def _cycle(lock: BenchLock) -> None:
    if not lock.acquire(blocking=True):
        raise RuntimeError("an uncontended blocking acquire returned False")
    lock.release()


def _thread(
    lock: BenchLock,
    go: threading.Event,
    times: list[float],
    counts: list[int],
    slot: int,
    latencies: list[float],
    errors: list[str],
) -> None:
    """Warm up, wait for ``go``, then loop until ``times`` = [start, warm-up end, end] says stop."""
    try:
        for _ in range(WARM_CYCLES):
            _cycle(lock)
        go.wait()
        start, warm_end, end = times
        time.sleep(max(0.0, start - time.monotonic()))
        while True:
            began = time.monotonic()
            _cycle(lock)
            ended = time.monotonic()
            if ended >= end:
                break
            if began >= warm_end:
                counts[slot] += 1
                latencies.append(ended - began)
    except BaseException:
        errors.append(traceback.format_exc(limit=5))


def schedule(specs: list[TargetSpec], rounds: int) -> list[tuple[int, TargetSpec]]:
    """(round, target) in the order they run: every target once per round, the order rotated each round."""
    return [(r, specs[(r + i) % len(specs)]) for r in range(rounds) for i in range(len(specs))]


def worker(
    specs: list[TargetSpec],
    rounds: int,
    index: int,
    threads: int,
    tag: str,
    warmup: float,
    seconds: float,
    ready: Any,
    start_at: Any,
    results: Any,
) -> None:
    """One process of the fleet (spawned): each (round, target) of :func:`schedule` in turn, each released by
    ``ready`` + ``start_at``, ``seconds`` counted after ``warmup``."""
    for r, spec in schedule(specs, rounds):
        backends: list[Any] = []
        counts: list[int] = [0] * threads
        latencies: list[float] = []
        errors: list[str] = []
        try:
            if spec.kind == FLOOR:  # http.client connections are not thread-safe: one per thread
                backends = [spec.open(f"bench-fleet-{tag}-{index}-{t}") for t in range(threads)]
                locks = [b.lock(f"bench-fleet-{spec.kind}-{tag}-{r}-{index}-{t}") for t, b in enumerate(backends)]
            else:
                backends = [spec.open(f"bench-fleet-{spec.kind}-{tag}-{index}")]
                locks = [backends[0].lock(f"bench-fleet-{spec.kind}-{tag}-{r}-{index}-{t}") for t in range(threads)]
            go, times = threading.Event(), [0.0, 0.0, 0.0]
            workers = [
                threading.Thread(target=_thread, args=(lock, go, times, counts, t, latencies, errors), daemon=True)
                for t, lock in enumerate(locks)
            ]
            for t in workers:
                t.start()
            ready.wait(180)  # every process connected and its threads warm before anyone starts
            times[:] = [start_at.value, start_at.value + warmup, start_at.value + warmup + seconds]
            go.set()
            # The client's side of the cost: this process's CPU (all its threads) over the counted window.
            time.sleep(max(0.0, times[1] - time.monotonic()))
            cpu = time.process_time()
            time.sleep(max(0.0, times[2] - time.monotonic()))
            cpu = time.process_time() - cpu
            for t in workers:
                t.join(warmup + seconds + START_DELAY + 120)
            if any(t.is_alive() for t in workers):
                errors.append(f"{spec.kind}: a thread did not finish its loop in time")
            results.put((index, counts, latencies, cpu, errors[0] if errors else None))
        except BaseException:
            results.put((index, counts, latencies, 0.0, traceback.format_exc(limit=5)))
            ready.abort()  # do not keep the others (and the bench process) waiting for this worker
            return
        finally:
            for backend in backends:
                try:
                    backend.close()
                except Exception:
                    pass


def _release(kind: str, procs: list[Any], ready: Any, start_at: Any, results: Any) -> float:
    """Set the start instant once every worker waits at ``ready``, then pass it; returns the instant.

    Polls the barrier as contention's start does: a worker that died would never arrive to break it.
    Raises RuntimeError when a worker died or did not arrive in time.
    """
    deadline = time.monotonic() + 180
    while ready.n_waiting < len(procs) and not ready.broken:
        if any(p.exitcode is not None for p in procs) or time.monotonic() > deadline:
            ready.abort()
            break
        time.sleep(0.02)
    start_at.value = time.monotonic() + START_DELAY
    try:
        ready.wait(10)
    except threading.BrokenBarrierError:
        try:
            reason = (results.get(timeout=2)[4] or "").strip().splitlines()[-1]
        except (queue.Empty, IndexError):
            reason = "a worker exited before reaching the start (see its stderr)"
        raise RuntimeError(f"{kind}: fleet workers did not all start: {reason}") from None
    return start_at.value


def _run_round(
    spec: TargetSpec,
    procs: list[Any],
    warmup: float,
    seconds: float,
    ready: Any,
    start_at: Any,
    results: Any,
    etcd_pid: int | None,
) -> tuple[list[int], list[float], float | None, float]:
    """Release the workers on one target for one round, read etcd's CPU over the counted window, gather answers.

    Returns each thread's counted cycles (ordered by worker, then thread), the cycle latencies in seconds,
    etcd's CPU seconds in the counted window (None: unknown) and the worker processes' own, all together.
    """
    start = _release(spec.kind, procs, ready, start_at, results)
    time.sleep(max(0.0, start + warmup - time.monotonic()))
    cpu_before = cpu_seconds(etcd_pid)
    time.sleep(max(0.0, start + warmup + seconds - time.monotonic()))
    cpu_after = cpu_seconds(etcd_pid)
    deadline = time.monotonic() + 120
    answers: list[Answer] = []
    for _ in procs:
        try:
            answers.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
        except queue.Empty:
            raise RuntimeError(f"{spec.kind}: fleet workers did not finish in time") from None
        error = answers[-1][4]
        if error:
            raise RuntimeError(f"{spec.kind}: fleet worker failed: {error.strip().splitlines()[-1]}")
    answers.sort(key=lambda a: a[0])
    counts = [n for a in answers for n in a[1]]
    latencies = [x for a in answers for x in a[2]]
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return counts, latencies, cpu, sum(a[3] for a in answers)


def _metrics(
    counts: list[int], latencies: list[float], seconds: float, cpu: float | None, client_cpu: float
) -> dict[str, Any]:
    """One target's figures over all its rounds (``seconds``: its counted seconds in all)."""
    total = sum(counts)
    cycle = latency_summary(latencies)
    metrics: dict[str, Any] = {
        "threads": len(counts),
        "acquisitions": total,
        "acq_per_s": total / seconds,
        "cycle_p50_ms": cycle["p50_ms"],
        "cycle_p99_ms": cycle["p99_ms"],
        "jain": jain(counts),
        "min_thread": min(counts),
        "client_cpu_s": client_cpu,
        "client_cpu_per_1000": client_cpu * 1000.0 / total if total else float("nan"),
    }
    if cpu is None:
        metrics["etcd_cpu_per_1000"] = "n/a"
    else:
        metrics["etcd_cpu_s"] = cpu
        metrics["etcd_cpu_per_1000"] = cpu * 1000.0 / total if total else float("nan")
    return metrics


def run(
    specs: list[TargetSpec],
    processes: int,
    threads: int,
    seconds: float,
    warmup: float,
    rounds: int = 3,
    etcd_pid: int | None = None,
) -> ScenarioResult:
    """Run the fleet loop for every target in ``rounds`` rounds with one set of worker processes.

    ``seconds`` are each target's counted seconds in all (``seconds / rounds`` a round, each after ``warmup``);
    ``etcd_pid`` is the bench's own etcd (None: etcd's CPU is reported as "n/a").
    Raises RuntimeError when a worker fails, an acquire fails or a worker hangs.
    """
    result = ScenarioResult(
        "fleet",
        f"{processes} processes x {threads} threads, a lock name per thread, {seconds:g} s per target in "
        f"{rounds} rounds (each after {warmup:g} s warm-up)",
        params={"processes": processes, "threads": threads, "seconds": seconds, "warmup_s": warmup, "rounds": rounds},
    )
    per_round = seconds / rounds
    ctx = multiprocessing.get_context("spawn")
    ready, start_at, results = ctx.Barrier(processes + 1), ctx.Value("d", 0.0, lock=False), ctx.Queue()
    tag = uuid.uuid4().hex[:8]
    procs = [
        ctx.Process(
            target=worker,
            args=(specs, rounds, i, threads, tag, warmup, per_round, ready, start_at, results),
            daemon=True,
        )
        for i in range(processes)
    ]
    counts: dict[str, list[int]] = {spec.kind: [0] * (processes * threads) for spec in specs}
    latencies: dict[str, list[float]] = {spec.kind: [] for spec in specs}
    cpu: dict[str, float | None] = {spec.kind: 0.0 for spec in specs}
    client_cpu: dict[str, float] = {spec.kind: 0.0 for spec in specs}
    for p in procs:
        p.start()
    try:
        for _, spec in schedule(specs, rounds):
            got, samples, used, own = _run_round(spec, procs, warmup, per_round, ready, start_at, results, etcd_pid)
            client_cpu[spec.kind] += own
            counts[spec.kind] = [a + b for a, b in zip(counts[spec.kind], got, strict=True)]
            latencies[spec.kind].extend(samples)
            previous = cpu[spec.kind]
            cpu[spec.kind] = None if previous is None or used is None else previous + used
    finally:
        ready.abort()  # a worker still waiting for a next round (after a failure) leaves at once
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(5)
    for spec in specs:
        result.metrics[spec.kind] = _metrics(
            counts[spec.kind], latencies[spec.kind], seconds, cpu[spec.kind], client_cpu[spec.kind]
        )
    result.details["thread_counts"] = counts
    floor = result.metrics.get(FLOOR, {}).get("acq_per_s")
    lockd = result.metrics.get("lockd", {}).get("acq_per_s")
    if floor and lockd is not None:
        result.notes.append(f"lockd / raw two-txn floor = {lockd / floor:.2f}x (issue 25: >= {FLOOR_RATIO:g}x)")
    result.notes.append(
        "acq/s = acquire+release cycles started after each round's warm-up and ended within its counted time, all "
        "threads together; etcd CPU = the bench's etcd process's user+system seconds in those windows, per 1,000 "
        "acquisitions; client CPU = the same for the worker processes together (time.process_time)"
    )
    return result
