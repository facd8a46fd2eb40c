"""Contention per lock template: acquisitions, wait and hold percentiles, waiters now.

A *template* is the lock name with its ids taken out, so that the 10,000 ``cinder-<uuid>-delete_volume`` locks
of a day are one row: the holder's own template where the caller said it (drivers_shim.synchronized records
it in the holder value), else the name with every UUID (with or without dashes), and any other standalone run
of eight or more hex digits, folded to ``{id}``.

Cardinality stays bounded whatever the names: past ``max_templates`` distinct templates, new ones count under
``other``. Percentiles are over the last ``samples`` waits and holds of each template (a ring per template, a
sort per request), so the figures follow the recent past rather than the whole life of the process. The
Prometheus histograms (lockd.metrics) take the same observations with their own, smaller label cap.

The lock view calls :meth:`Profile.acquired` when a hold starts and :meth:`Profile.released` when it ends,
from its watch thread; both are a few dictionary and deque operations.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from lockd.lock import Holder

#: Templates profiled before new ones are counted under OTHER.
DEFAULT_MAX_TEMPLATES = 1000
#: Waits and holds kept per template for the percentiles.
DEFAULT_SAMPLES = 1024
OTHER = "other"
ID = "{id}"
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
#: Any other id: a run of 8 or more hex digits with a digit in it, standing alone between non-alphanumerics
#: (``test-ae7ee84ef650``, a request id, a short hash), so words such as ``deadbeefcafe`` stay as they are.
_HEX = re.compile(r"(?<![0-9A-Za-z])(?=[a-fA-F]*[0-9])[0-9a-fA-F]{8,}(?![0-9A-Za-z])")


@functools.lru_cache(maxsize=4096)
def fold(name: str) -> str:
    """``name`` with every UUID (dashed or not) and every other standalone hex id replaced by ``{id}``: lock
    names must never become metric labels, and ids are what make them unbounded. Cached: the view folds a name
    at every hold, and the same names are taken again and again."""
    if len(name) < 8:
        return name
    return _HEX.sub(ID, _UUID.sub(ID, name))


def template_of(name: str, holder: Holder) -> str:
    """The template a hold of ``name`` counts under: the holder's own, else the folded name (interned: the
    same few strings are stored with every hold)."""
    return sys.intern(holder.template or fold(name))


class Observer(Protocol):
    """Where waits and holds also go (lockd.metrics.Metrics: the Prometheus histograms)."""

    def observe_wait(self, template: str, seconds: float) -> None: ...

    def observe_hold(self, template: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class TemplateProfile:
    template: str
    acquisitions: int
    wait_p50: float | None
    wait_p99: float | None
    hold_p50: float | None
    hold_p99: float | None
    waiters: int


class _Stats:
    __slots__ = ("acquisitions", "waits", "holds")

    def __init__(self, samples: int) -> None:
        self.acquisitions = 0
        self.waits: deque[float] = deque(maxlen=samples)
        self.holds: deque[float] = deque(maxlen=samples)


class Profile:
    """Per-template counters and recent samples. Thread-safe."""

    def __init__(
        self,
        max_templates: int = DEFAULT_MAX_TEMPLATES,
        samples: int = DEFAULT_SAMPLES,
        observer: Observer | None = None,
    ) -> None:
        self.max_templates = max_templates
        self.samples = samples
        self.observer = observer
        self._stats: dict[str, _Stats] = {}
        self._mutex = threading.Lock()

    def _slot(self, template: str) -> tuple[str, _Stats]:
        stats = self._stats.get(template)
        if stats is None:
            if len(self._stats) >= self.max_templates and template != OTHER:
                return self._slot(OTHER)
            stats = self._stats[template] = _Stats(self.samples)
        return template, stats

    def acquired(self, template: str, waited: float | None) -> None:
        """A hold of ``template`` started, after waiting ``waited`` seconds (None: unknown)."""
        with self._mutex:
            template, stats = self._slot(template)
            stats.acquisitions += 1
            if waited is not None:
                stats.waits.append(waited)
        if waited is not None and self.observer is not None:
            self.observer.observe_wait(template, waited)

    def released(self, template: str, held: float) -> None:
        """A hold of ``template`` ended after ``held`` seconds."""
        with self._mutex:
            template, stats = self._slot(template)
            stats.holds.append(held)
        if self.observer is not None:
            self.observer.observe_hold(template, held)

    def fold_counts(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Per-template sums of per-template ``counts``, unknown templates past the cap under OTHER."""
        out: dict[str, int] = {}
        with self._mutex:
            for template, count in counts.items():
                key = template if template in self._stats or len(self._stats) < self.max_templates else OTHER
                out[key] = out.get(key, 0) + count
        return out

    def rows(self, waiters: Mapping[str, int]) -> list[TemplateProfile]:
        """Every template seen (or waited for now), busiest first: most waiters now, then most acquisitions."""
        waiting = self.fold_counts(waiters)
        with self._mutex:
            copies = {t: (s.acquisitions, sorted(s.waits), sorted(s.holds)) for t, s in self._stats.items()}
        for template in waiting:
            copies.setdefault(template, (0, [], []))
        rows = [
            TemplateProfile(
                template,
                count,
                quantile(waits, 0.5),
                quantile(waits, 0.99),
                quantile(holds, 0.5),
                quantile(holds, 0.99),
                waiting.get(template, 0),
            )  # fmt: skip
            for template, (count, waits, holds) in copies.items()
        ]
        rows.sort(key=lambda row: (-row.waiters, -row.acquisitions, row.template))
        return rows


def quantile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of sorted ``ordered`` (None if empty): a value that was observed."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
