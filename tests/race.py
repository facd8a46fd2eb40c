"""Race like production: several processes of many threads (or green threads), warmed, released at one instant.

``run_race`` starts ``processes`` copies of tests/racer.py, and for each round waits until every thread of
every process has warmed up and is parked, then writes "go" to all processes back to back. It returns the
per-round results of every thread (see tests/racer.py for the scenarios).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.procs import ChildProcess

ROUNDS = 20


def new_ids(rounds: int = ROUNDS) -> list[str]:
    """One fresh resource id (or lock name) per round."""
    return [str(uuid.uuid4()) for _ in range(rounds)]


def run_race(
    scenario: str,
    ids: list[str],
    backend_url: str,
    *,
    runtime: str = "threads",
    threads: int = 8,
    processes: int = 4,
    status_url: str | None = None,
    round_timeout: float = 120.0,
    per_process: list[dict[str, Any]] | None = None,
    **options: Any,
) -> list[list[dict[str, Any]]]:
    """One round per id (kind "volume"), over ``processes`` racers of ``threads`` each; every thread's result,
    per round. ``options`` are the scenario's own (tests/racer.py); ``per_process`` gives each racer settings
    of its own over them (then ``processes`` is its length), e.g. one patched process beside an unpatched one."""
    config = {
        "scenario": scenario,
        "runtime": runtime,
        "threads": threads,
        "rounds": len(ids),
        "ids": ids,
        "kind": "volume",
        "backend_url": backend_url,
        "status_url": status_url,
        **options,
    }
    own = per_process if per_process is not None else [{}] * processes
    racers = [ChildProcess("-W", "ignore", "-m", "tests.racer", json.dumps({**config, **o})) for o in own]
    rounds: list[list[dict[str, Any]]] = []
    try:
        for rnd in range(len(ids)):
            for racer in racers:
                event = racer.wait_event("ready", "error", timeout=round_timeout)
                assert event.get("event") == "ready" and event["round"] == rnd, event
            for racer in racers:
                racer.send("go")
            results: list[dict[str, Any]] = []
            for racer in racers:
                results.extend(racer.wait_event("done", timeout=round_timeout)["results"])
            errors = [r for r in results if "error" in r]
            assert not errors, f"round {rnd}: {errors[:3]}"
            rounds.append(results)
    finally:
        for racer in racers:
            racer.finish()
            racer.stop()
    return rounds
