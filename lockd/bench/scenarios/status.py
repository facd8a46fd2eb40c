"""Status compare-and-set throughput and the 32-way race, from ``lockd.bench.status.run_status_bench``.

The status store's benchmark lives with its author's module (``lockd/bench/status.py``); this scenario runs it
on the same etcd and turns its answer into table rows: lockd's store against stock etcd3gw's get+replace (atomic,
no fencing) and get+put (what a read-then-write does: racy). If that module is missing or fails, the scenario is
skipped with a note and the rest of the run stands.

In the same run, ``lockd.bench.status_floor`` times one fenced transition against a raw txn of the same shape
(issue 25's one-txn floor): the ``fenced p50`` column, lockd's row against the ``etcd one-txn floor`` row.
"""

from __future__ import annotations

import importlib
from typing import Any

from lockd.bench import status_floor
from lockd.bench.result import ScenarioResult
from lockd.bench.targets import TargetSpec

STORE = "lockd-status"
REPLACE = "etcd3gw get+replace"
NAIVE = "etcd3gw get+put"
ONE_TXN = "etcd one-txn floor"


def _find() -> Any:
    for module in ("lockd.bench.status", "lockd.status"):
        try:
            found = getattr(importlib.import_module(module), "run_status_bench", None)
        except ImportError:
            continue
        if callable(found):
            return found
    return None


def run(spec: TargetSpec, ops: int, racers: int, rounds: int) -> ScenarioResult:
    result = ScenarioResult(
        "status",
        f"status compare-and-set: {ops} transitions, {racers}-way race x {rounds} rounds",
        params={"ops": ops, "racers": racers, "rounds": rounds},
    )
    bench = _find()
    if bench is None:
        result.skipped = True
        result.notes.append("skipped: no run_status_bench() in lockd.bench.status or lockd.status")
        return result
    try:
        answer = bench(spec.url, transitions=ops, contenders=racers, rounds=rounds)
        un, stock, race = answer["uncontended"], answer["stock"], answer["race"]
        result.metrics[STORE] = {
            "transitions_per_s": un["same_resource_per_s"],
            "fresh_per_s": un["fresh_resources_per_s"],
            "race_winners_max": max(race["winners_per_round"]),
            "race_winners_min": min(race["winners_per_round"]),
            "loser_calls_mean": race["loser_calls_mean"],
            "loser_call_ms_p50": race["loser_call_ms_median"],
        }
        result.metrics[REPLACE] = {"transitions_per_s": stock["get_replace_per_s"]}
        result.metrics[NAIVE] = {
            "transitions_per_s": stock["naive_get_put_per_s"],
            "race_winners_max": max(race["naive_winners_per_round"]),
            "race_winners_min": min(race["naive_winners_per_round"]),
        }
    except Exception as exc:  # another module's benchmark: report its failure, keep the rest of the run
        result.skipped = True
        result.metrics.clear()
        result.notes.append(f"run_status_bench failed: {type(exc).__name__}: {exc}")
        return result
    result.details["run_status_bench"] = answer
    result.notes.append(
        f"lockd store / get+replace = {answer['ratio']['vs_get_replace']:.2f}x; a race must have exactly one "
        "winner per round (get+put, not atomic, lets several through)"
    )
    _add_one_txn_floor(result, spec, ops)
    return result


def _add_one_txn_floor(result: ScenarioResult, spec: TargetSpec, ops: int) -> None:
    """Fenced transition p50 and the raw one-txn floor's, measured now on the same etcd (module doc)."""
    try:
        floor = status_floor.measure(spec, ops)
    except Exception as exc:  # keep the status figures already measured; say why the floor is missing
        result.notes.append(f"one-txn floor failed: {type(exc).__name__}: {exc}")
        return
    store = result.metrics[STORE]
    store["transition_p50_ms"] = floor["transition"]["p50_ms"]
    store["transition_p99_ms"] = floor["transition"]["p99_ms"]
    store["vs_one_txn"] = floor["ratio"]
    result.metrics[ONE_TXN] = {
        "transition_p50_ms": floor["one_txn"]["p50_ms"],
        "transition_p99_ms": floor["one_txn"]["p99_ms"],
    }
    result.details["one_txn_floor"] = floor
    result.notes.append(
        f"fenced p50: one compare_and_set(fence=held lockd lock) against a raw gateway txn of the same shape "
        f"(2 compares, a put of the same {floor['value_bytes']}-byte record), {ops} each, interleaved: "
        f"{floor['ratio']:.2f}x"
    )
