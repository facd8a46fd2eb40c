"""Status compare-and-set throughput and the 32-way race, delegated to ``lockd.status.run_status_bench``.

The status store is another module's idea, so its benchmark lives with it; this scenario only finds it,
passes the arguments it accepts, and puts its numbers in the report. Until it exists the scenario is skipped
with a note instead of failing the run.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from lockd.bench.result import ScenarioResult
from lockd.bench.targets import TargetSpec

RACERS = 32


def _find() -> Any:
    for module in ("lockd.status", "lockd.status.bench"):
        try:
            found = getattr(importlib.import_module(module), "run_status_bench", None)
        except ImportError:
            continue
        if callable(found):
            return found
    return None


def run(spec: TargetSpec, ops: int) -> ScenarioResult:
    result = ScenarioResult("status", f"status CAS throughput and the {RACERS}-way race", params={"ops": ops})
    bench = _find()
    if bench is None:
        result.skipped = True
        result.notes.append("skipped: lockd.status has no run_status_bench() yet")
        return result
    offered = {
        "backend_url": spec.url,
        "url": spec.url,
        "endpoint": spec.endpoint,
        "ops": ops,
        "racers": RACERS,
        "lease_ttl": spec.lease_ttl,
    }
    accepted = inspect.signature(bench).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    try:
        answer = bench(**{k: v for k, v in offered.items() if takes_any or k in accepted})
    except Exception as exc:  # another module's benchmark: report its failure, keep the rest of the run
        result.skipped = True
        result.notes.append(f"run_status_bench failed: {type(exc).__name__}: {exc}")
        return result
    if not isinstance(answer, dict):
        answer = getattr(answer, "__dict__", {"result": answer})
    per_target = {k: v for k, v in answer.items() if isinstance(v, dict)}
    flat = {k: v for k, v in answer.items() if not isinstance(v, (dict, list))}
    if per_target:
        result.metrics.update(per_target)
    if flat:
        result.metrics.setdefault("lockd", {}).update(flat)
    lists = {k: v for k, v in answer.items() if isinstance(v, list)}
    if lists:
        result.details.update(lists)
    return result
