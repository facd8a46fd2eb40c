"""Leases after many cycles: lockd keeps one session lease per coordinator, stock tooz grants one per attempt.

Counts the etcd leases that appeared while one coordinator ran ``cycles`` acquire+release cycles, while it is
still connected ("live") and again after ``stop()`` (lockd revokes its lease; stock tooz's stay until their TTL).
"""

from __future__ import annotations

import os
import uuid

from lockd.bench import etcd_admin
from lockd.bench.result import ScenarioResult
from lockd.bench.targets import TargetSpec


def run(specs: list[TargetSpec], cycles: int) -> ScenarioResult:
    """Raises RuntimeError if an uncontended acquire fails."""
    result = ScenarioResult("leases", f"etcd leases after {cycles:,} acquire+release cycles", params={"cycles": cycles})
    for spec in specs:
        before = etcd_admin.lease_ids(spec.endpoint)
        backend = spec.open(f"bench-leases-{spec.kind}-{os.getpid()}")
        try:
            lock = backend.lock(f"bench-leases-{spec.kind}-{uuid.uuid4().hex[:8]}")
            for _ in range(cycles):
                if not lock.acquire(blocking=True):
                    raise RuntimeError(f"{spec.kind}: an uncontended acquire failed")
                lock.release()
            live = len(etcd_admin.lease_ids(spec.endpoint) - before)
        finally:
            backend.close()
        after = len(etcd_admin.lease_ids(spec.endpoint) - before)
        result.metrics[spec.kind] = {
            "cycles": cycles,
            "coordinators": 1,
            "leases_live": live,
            "leases_after_stop": after,
        }
    result.notes.append(
        "leases = etcd leases created since the scenario started and still alive; stock tooz grants one per "
        "attempt and never revokes it, so its leases only go when their TTL runs out"
    )
    return result
