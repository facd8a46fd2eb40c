"""``python -m bench.handoff_breakdown`` with tiny sizes: its report has every term, and the terms add up.

Speed is never asserted (the machine is shared and small): only that each number is there, has the right sign and
agrees with the others (docs/benchmarks.md has the real runs).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

#: The handoff's terms on its critical path (they sum to ``handoff``) and beside it.
CRITICAL = (
    "release_call_to_send",
    "release_send_to_event",
    "event_to_wake",
    "wake_to_take_send",
    "take_commit",
    "take_to_return",
    "wake_to_return",
)
#: A granted handoff's path: no take, the grant's event wakes the successor holding.
GRANTED = ("release_call_to_send", "release_send_to_event", "event_to_wake", "wake_to_return")
BESIDE = ("release_commit", "event_after_answer", "successor_read", "watch_cancel", "delete_then_mark")
FLOORS = ("commit", "two_txn", "delete_to_event", "delete_to_wake")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_handoff_breakdown_reports_every_term_consistently(etcd_url: str) -> None:
    run = subprocess.run(
        [
            sys.executable, "-m", "bench.handoff_breakdown", "--url", etcd_url,
            "--processes", "2", "--cycles", "6", "--floor-cycles", "20", "--no-etcd-mutex", "--json",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)

    floors = report["floors"]
    assert set(floors) == set(FLOORS)
    for floor in floors.values():
        assert floor["n"] > 0 and 0 < floor["p50_ms"] <= floor["p99_ms"]
    assert floors["commit"]["p50_commits"] == 1.0
    assert floors["two_txn"]["p50_ms"] >= floors["commit"]["p50_ms"]

    terms = report["terms"]
    assert set(terms) == {*CRITICAL, "handoff", *BESIDE}
    handoff = terms["handoff"]
    assert handoff["n"] == report["handoffs"]["counts"]["handoffs"] > 0
    for name, term in terms.items():
        assert term["what"] and term["critical_path"] == (name in (*CRITICAL, "handoff")), name
        if term["n"] == 0:
            assert term["p50_ms"] is None, name  # e.g. no read inside a handoff: NaN in the JSON is null
            continue
        assert _finite(term["p50_ms"]) and term["p50_ms"] <= term["p99_ms"], name
        assert math.isclose(term["p50_commits"], term["p50_ms"] / floors["commit"]["p50_ms"]), name
        if name != "event_after_answer":  # the event may be read before the releaser reads its answer
            assert term["p50_ms"] >= 0, name
    # Every handoff has a release txn and an event; a take only where no grant was seen (lockd.lock's grant).
    for name in ("release_call_to_send", "release_send_to_event", "event_to_wake", "release_commit"):
        assert terms[name]["n"] > 0, name

    # A handoff contains the release's commit; the critical-path terms of one handoff add up to that handoff.
    assert handoff["p50_ms"] >= terms["release_commit"]["p50_ms"]
    assert handoff["p50_ms"] >= terms["release_send_to_event"]["p50_ms"]
    taking = CRITICAL[:3] + ("wake_to_take_send", "take_commit", "take_to_return")
    for path in (GRANTED, taking):
        if all(terms[name]["n"] == handoff["n"] for name in path):
            total = sum(terms[name]["mean_ms"] for name in path)
            assert math.isclose(total, handoff["mean_ms"], rel_tol=1e-6), path

    per_acquisition = report["requests_per_acquisition"]
    assert math.isclose(per_acquisition["release kv/txn"], 1.0)
    # one enqueue per acquisition, and a lean try before it when the process last found the name free (its first
    # acquisition, or after the lock was idle: lockd.lock._Queued)
    assert 1.0 <= per_acquisition["enqueue kv/txn"] <= 1.5

    assert "etcd_mutex" not in report  # left out (--no-etcd-mutex): the contention tests run that target

    acquisitions = report["acquisitions"]
    assert acquisitions["counters_exact"] is True
    assert all(acquisitions[k] > 0 for k in ("lockd_per_s", "lockd_traced_per_s", "tooz_per_s", "lockd_vs_tooz"))
