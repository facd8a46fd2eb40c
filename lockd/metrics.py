"""Prometheus collectors of the admin API: counters it bumps, and gauges read from the lock view at scrape time.

Each app gets its own registry (several apps in one test process must not collide in the global one).
Labels carry route templates, status codes and lock templates only: never lock names (unbounded) and never a
token. Lock templates (lockd.api.profile) are bounded twice: ids are folded out of names, and only the first
``TEMPLATE_LABELS`` templates seen get a label of their own; the rest share ``template="other"``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: (locks held, waiters queued, members) as the lock view sees them now.
Totals = Callable[[], tuple[int, int, int]]
#: Deadlocks open now (lockd.api.waits.DeadlockTracker).
OpenDeadlocks = Callable[[], int]

#: Lock templates with a label of their own in the wait and hold histograms; later ones count as "other".
TEMPLATE_LABELS = 50
OTHER = "other"
#: Seconds: lock waits and holds range from a millisecond (a free lock) to minutes (a volume copy).
DURATION_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class _ViewCollector(Collector):
    def __init__(self, totals: Totals) -> None:
        self._totals = totals

    def collect(self) -> Iterator[Metric]:
        held, waiters, members = self._totals()
        yield GaugeMetricFamily("lockd_locks_held", "Locks held now (lockd and stock tooz holders)", value=held)
        yield GaugeMetricFamily("lockd_lock_waiters", "lockd waiters queued now, over all locks", value=waiters)
        yield GaugeMetricFamily("lockd_members", "Live lockd sessions (sidecars and shim processes)", value=members)


class _DeadlockCollector(Collector):
    def __init__(self, open_deadlocks: OpenDeadlocks) -> None:
        self._open = open_deadlocks

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "lockd_deadlocks", "Cycles in the wait-for graph now (GET /v1/deadlocks)", value=self._open()
        )


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
        self.wait_seconds = Histogram(
            "lockd_lock_wait_seconds",
            "Seconds from a lockd waiter's queue entry appearing to its hold starting, by lock template",
            ["template"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.hold_seconds = Histogram(
            "lockd_lock_hold_seconds",
            "Seconds a lock was held (seen by the sidecar's watch), by lock template",
            ["template"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        for family in (self.wait_seconds, self.hold_seconds):
            family.labels(OTHER)  # exported (at zero) from the start, so dashboards and alerts find the series
        self.template_labels = TEMPLATE_LABELS
        self._labelled: set[str] = set()
        self._labels_mutex = threading.Lock()
        # Template -> its histogram child; templates beyond the label cap map to "other"'s child, so these two
        # grow with the profile's template set (lockd.api.profile caps it), not with lock names.
        self._waits: dict[str, Any] = {}
        self._holds: dict[str, Any] = {}

    def watch(self, totals: Totals, open_deadlocks: OpenDeadlocks | None = None) -> None:
        """Export the lock view's gauges (called once the view exists, in the app's lifespan)."""
        self.registry.register(_ViewCollector(totals))
        if open_deadlocks is not None:
            self.registry.register(_DeadlockCollector(open_deadlocks))

    def template_label(self, template: str) -> str:
        """``template`` while fewer than ``template_labels`` have a label, else "other": a bounded label set."""
        if template in self._labelled:
            return template
        with self._labels_mutex:
            if len(self._labelled) < self.template_labels:
                self._labelled.add(template)
                return template
        return OTHER

    def observe_wait(self, template: str, seconds: float) -> None:
        child = self._waits.get(template)
        if child is None:  # Histogram.labels() takes a lock and builds the label tuple: once per template
            child = self._waits[template] = self.wait_seconds.labels(self.template_label(template))
        child.observe(seconds)

    def observe_hold(self, template: str, seconds: float) -> None:
        child = self._holds.get(template)
        if child is None:
            child = self._holds[template] = self.hold_seconds.labels(self.template_label(template))
        child.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
