"""``lockd bench --scenario waiters`` at tiny sizes: every waiter served, nothing lost, the figures present.

Sizes are the CI-facing ones (20 waiters; ``LOCKD_LONG_TESTS=1`` adds the threads run's 1-waiter point, whose
checks the 20-waiter run already makes, at about the same cost: child start-up and settle times dominate);
the bench's own runs use 1 to 5,000. Speed and connection counts are never asserted here: they are what the
bench reports (docs/benchmarks.md), against stock tooz.
"""

from __future__ import annotations

import json
import math

import pytest

from lockd.bench.report import Report
from lockd.bench.result import ScenarioResult
from lockd.cli.main import main
from tests.long_runs import LONG


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.parametrize(("mode", "counts"), [("threads", "1,20" if LONG else "20"), ("eventlet", "20")])
def test_waiters_are_all_served_and_measured(
    etcd_url: str, mode: str, counts: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["bench", "--backend-url", etcd_url, "--scenario", "waiters", "--waiters", counts, "--waiter-mode", mode,
         "--no-fd-floor", "--serve-timeout", "60", "--json"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    scenarios = json.loads(out)["scenarios"]
    expected = {f"waiters/{mode}/{n}" for n in counts.split(",")}
    assert set(scenarios) == expected
    for name in expected:
        waiters = int(name.rsplit("/", 1)[1])
        metrics = scenarios[name]["metrics"]
        assert set(metrics) == {"lockd", "tooz"}
        for target, row in metrics.items():
            assert "crashed" not in row, (target, row)
            assert row["green"] is (mode == "eventlet")
            assert row["served"] == waiters and row["all_served"] is True, (target, row)
            assert row["errors"] == 0 and row["lock_lost"] is False, (target, row)
            assert row["conns_waiting"] >= 1 and row["fds_waiting"] >= row["conns_waiting"]
            assert row["rss_waiting_mb"] > 10
            assert _finite(row["served_s"]) and row["served_s"] > 0
            assert 0 <= row["handoff_p50_ms"] <= row["handoff_p99_ms"]


def _floor_report(row: dict[str, object]) -> str:
    result = ScenarioResult("waiters/fd-floor", "floor", params={"waiters": 1200, "fd_limit": 256})
    result.metrics = {"lockd": row, "tooz": {}}
    report = Report(machine={}, config={}, scenarios=[result])
    report.check_floors()
    return next(f.verdict for f in report.floors if "fd limit" in f.name)


def test_the_fd_floor_passes_only_when_all_are_served_on_few_connections_and_nothing_is_lost() -> None:
    good = {"served_of": "1200/1200", "all_served": True, "lock_lost": False, "held_locks": "kept", "conns_waiting": 9}
    assert _floor_report(good) == "PASS"
    assert _floor_report({**good, "conns_waiting": 17}) == "FAIL"
    assert _floor_report({**good, "all_served": False}) == "FAIL"
    assert _floor_report({**good, "lock_lost": True}) == "FAIL"
    assert _floor_report({"crashed": "killed"}) == "FAIL"
