"""Uncontended acquire+release: one process, one name per target, batches interleaved across targets.

Interleaving (a batch of each target in turn, the order rotating every round) spreads the machine's noise,
etcd's compactions and fsync hiccups evenly over the targets instead of charging them to whichever ran last.
Each sample is one ``acquire(blocking=True)`` plus ``release()`` as Cinder's ``synchronized`` does them.
"""

from __future__ import annotations

import os
import time
import uuid

from lockd.bench.result import ScenarioResult
from lockd.bench.stats import latency_summary
from lockd.bench.targets import BenchLock, TargetSpec

BATCH = 50
WARMUP = 20


def _cycle(lock: BenchLock, kind: str) -> float:
    start = time.perf_counter()
    if not lock.acquire(blocking=True):
        raise RuntimeError(f"{kind}: an uncontended acquire failed")
    lock.release()
    return time.perf_counter() - start


def run(specs: list[TargetSpec], ops: int) -> ScenarioResult:
    """``ops`` acquire+release cycles per target. Raises RuntimeError if an uncontended acquire fails."""
    result = ScenarioResult("uncontended", "uncontended acquire+release", params={"ops": ops, "batch": BATCH})
    tag = uuid.uuid4().hex[:8]
    backends = {spec.kind: spec.open(f"bench-{spec.kind}-{os.getpid()}-{tag}") for spec in specs}
    try:
        locks = {kind: backend.lock(f"bench-uncontended-{kind}-{tag}") for kind, backend in backends.items()}
        for kind, lock in locks.items():
            for _ in range(WARMUP):  # first connections, lease grants, imports
                _cycle(lock, kind)
        samples: dict[str, list[float]] = {kind: [] for kind in locks}
        kinds = list(locks)
        rounds = -(-ops // BATCH)
        for r in range(rounds):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            for kind in order:
                n = min(BATCH, ops - len(samples[kind]))
                samples[kind].extend(_cycle(locks[kind], kind) for _ in range(n))
    finally:
        for backend in backends.values():
            backend.close()
    for kind, values in samples.items():
        summary = latency_summary(values)
        summary["ops_per_s"] = len(values) / sum(values) if values else 0.0
        result.metrics[kind] = summary
        result.samples[kind] = values
    return result
