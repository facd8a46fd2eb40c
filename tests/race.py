"""Race like production: several processes of many threads (or green threads), warmed, released at one instant.

``run_race`` starts ``processes`` copies of tests/racer.py, and for each round waits until every thread of
every process has warmed up and is parked, then writes "go" to all processes back to back. It returns the
per-round results of every thread (see tests/racer.py for the scenarios).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from tests.procs import ChildProcess

ROUNDS = 20


def new_ids(rounds: int = ROUNDS) -> list[str]:
    """One fresh resource id (or lock name) per round."""
    return [str(uuid.uuid4()) for _ in range(rounds)]


def run_race(
    config: dict[str, Any],
    processes: int = 4,
    before_round: Callable[[int], None] | None = None,
    round_timeout: float = 120.0,
) -> list[list[dict[str, Any]]]:
    """Run ``config["rounds"]`` rounds over ``processes`` racers; the results of all threads, per round.

    ``before_round(r)`` runs after every thread is warmed and parked and before "go" (e.g. to reset state).
    """
    racers = [ChildProcess("-W", "ignore", "-m", "tests.racer", json.dumps(config)) for _ in range(processes)]
    rounds: list[list[dict[str, Any]]] = []
    try:
        for rnd in range(int(config["rounds"])):
            for racer in racers:
                event = racer.wait_event("ready", "error", timeout=round_timeout)
                assert event.get("event") == "ready" and event["round"] == rnd, event
            if before_round is not None:
                before_round(rnd)
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
