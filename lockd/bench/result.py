"""What a scenario hands back: metrics per target (for the table and JSON) and raw samples (for the plot)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class ScenarioResult:
    """One scenario's outcome.

    ``metrics[target]`` are flat numbers (ms, per-second, counts) that go into the JSON and the table;
    ``samples[target]`` are raw latencies in seconds, only for the plot; ``details`` are JSON-able extras such
    as per-worker counts; ``notes`` explain what was skipped or how to read a number.
    """

    name: str
    title: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    samples: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    skipped: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "params": self.params,
            "skipped": self.skipped,
            "metrics": self.metrics,
            "details": self.details,
            "notes": self.notes,
        }
