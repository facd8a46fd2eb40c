"""Prometheus collectors of the admin API: counters it bumps, and gauges read from the lock view at scrape time.

Each app gets its own registry (several apps in one test process must not collide in the global one).
Labels carry route templates and status codes only: never lock names (unbounded) and never a token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: (locks held, waiters queued, members) as the lock view sees them now.
Totals = Callable[[], tuple[int, int, int]]


class _ViewCollector(Collector):
    def __init__(self, totals: Totals) -> None:
        self._totals = totals

    def collect(self) -> Iterator[Metric]:
        held, waiters, members = self._totals()
        yield GaugeMetricFamily("lockd_locks_held", "Locks held now (lockd and stock tooz holders)", value=held)
        yield GaugeMetricFamily("lockd_lock_waiters", "lockd waiters queued now, over all locks", value=waiters)
        yield GaugeMetricFamily("lockd_members", "Live lockd sessions (sidecars and shim processes)", value=members)


class Metrics:
    """The collectors of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.breaks = Counter("lockd_lock_breaks", "Locks force-released through the admin API", registry=self.registry)
        self.lease_losses = Counter(
            "lockd_lease_losses",
            "Sessions whose lease ended (expired or revoked) while they still held locks",
            registry=self.registry,
        )
        self.etcd_errors = Counter(
            "lockd_etcd_errors",
            "Failed etcd requests and broken etcd reads seen by the sidecar",
            registry=self.registry,
        )
        self.requests = Counter(
            "lockd_api_requests",
            "Admin API requests by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )

    def watch(self, totals: Totals) -> None:
        """Export the lock view's gauges (called once the view exists, in the app's lifespan)."""
        self.registry.register(_ViewCollector(totals))

    def render(self) -> bytes:
        return generate_latest(self.registry)
