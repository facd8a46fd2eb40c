"""Issue 25's bench figures at tiny sizes: the fleet scenario, the status one-txn floor, etcd CPU per 1,000, and the
contention scenario's commit, handoffs in commits and etcd's own Mutex (the etcd-mutex target) as a control.

As in test_bench_smoke.py, speed is never asserted (the machine is shared and small): the figures must exist,
be positive where they count something, add up exactly, and reach the table and the floors.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import pytest

from lockd.bench import runner
from lockd.bench.etcd import cpu_seconds
from lockd.cli.main import main


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check_fleet(fleet: dict[str, Any], processes: int, threads: int, seconds: float) -> None:
    assert set(fleet["metrics"]) == {"lockd", "etcd-floor", "tooz"}
    for kind, metrics in fleet["metrics"].items():
        counts = fleet["details"]["thread_counts"][kind]
        assert len(counts) == metrics["threads"] == processes * threads
        assert sum(counts) == metrics["acquisitions"] > 0 and min(counts) == metrics["min_thread"]
        assert metrics["acq_per_s"] == pytest.approx(metrics["acquisitions"] / seconds)
        assert _positive(metrics["cycle_p50_ms"]) and metrics["cycle_p50_ms"] <= metrics["cycle_p99_ms"]
        assert 0 < metrics["jain"] <= 1.0
        assert _positive(metrics["client_cpu_s"]) and _positive(metrics["client_cpu_per_1000"])


def test_fleet_on_a_given_etcd_counts_every_thread_and_leaves_etcd_cpu_unknown(
    etcd_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["bench", "--backend-url", etcd_url, "--scenario", "fleet", "--fleet-processes", "2", "--fleet-threads", "2",
         "--fleet-seconds", "0.6", "--fleet-warmup", "0.2", "--fleet-rounds", "2", "--json"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    fleet = report["scenarios"]["fleet"]
    params = {k: fleet["params"][k] for k in ("processes", "threads", "seconds", "warmup_s", "rounds")}
    assert params == {"processes": 2, "threads": 2, "seconds": 0.6, "warmup_s": 0.2, "rounds": 2}
    _check_fleet(fleet, 2, 2, 0.6)
    # an etcd the bench did not start: its pid is unknown, so its CPU is not guessed
    assert {m["etcd_cpu_per_1000"] for m in fleet["metrics"].values()} == {"n/a"}
    floors = {f["name"]: f for f in report["floors"]}
    floor = floors["fleet acq/s >= 0.8 x raw two-txn floor, 2 processes x 2 threads (issue 25)"]
    assert floor["verdict"] in ("PASS", "FAIL") and floor["measured"].endswith("x")


def test_private_etcd_reports_etcd_cpu_and_the_raw_floors() -> None:
    config = runner.BenchConfig(
        scenarios=("uncontended", "contention", "status", "fleet"),
        ops=10,
        processes=2,
        cycles=10,
        commit_samples=40,
        status_ops=20,
        status_racers=2,
        status_rounds=1,
        fleet_processes=2,
        fleet_threads=1,
        fleet_seconds=0.5,
        fleet_warmup=0.2,
        fleet_rounds=1,
    )
    report = runner.run(config)
    data = json.loads(json.dumps(report.to_json()))
    scenarios = data["scenarios"]

    contention = scenarios["contention"]["metrics"]
    assert list(contention) == ["lockd", "etcd-mutex", "tooz", "oslo-file"]
    for kind in ("lockd", "etcd-mutex", "tooz"):  # all talk to etcd the whole time: its CPU must have moved
        assert contention[kind]["counter_exact"] is True
        assert _positive(contention[kind]["etcd_cpu_s"]) and _positive(contention[kind]["etcd_cpu_per_1000"])
        assert contention[kind]["etcd_cpu_per_1000"] == pytest.approx(
            contention[kind]["etcd_cpu_s"] * 1000 / contention[kind]["acquisitions"]
        )
    assert contention["oslo-file"]["etcd_cpu_per_1000"] >= 0  # no etcd traffic, only etcd's own ticking

    # etcd's own Mutex: FIFO like lockd, so a waiter is queued at every release (2 workers x 10: 19 handoffs at most)
    mutex = contention["etcd-mutex"]
    assert mutex["counter"] == mutex["counter_expected"] == 20 and mutex["overlaps"] == 0
    assert 0 < mutex["handoffs"] <= 19 and _positive(mutex["handoff_p50_ms"])
    assert mutex["leases_live"] <= 2  # one session lease per worker process
    commit = scenarios["contention"]["details"]["commit"]
    assert commit["n"] == scenarios["contention"]["params"]["commit_samples"] == 40 and _positive(commit["p50_ms"])
    for kind in ("lockd", "etcd-mutex"):  # stock tooz may have no handoff at all in 20 cycles (its p50 is null)
        for q in ("p50", "p99"):
            assert contention[kind][f"handoff_{q}_commits"] == pytest.approx(
                contention[kind][f"handoff_{q}_ms"] / commit["p50_ms"]
            )
    assert "handoff_p50_commits" in contention["tooz"] and "handoff_p50_commits" not in contention["oslo-file"]

    status = scenarios["status"]
    assert not status["skipped"], status["notes"]
    store, raw = status["metrics"]["lockd-status"], status["metrics"]["etcd one-txn floor"]
    assert _positive(store["transition_p50_ms"]) and _positive(raw["transition_p50_ms"])
    assert store["vs_one_txn"] == pytest.approx(store["transition_p50_ms"] / raw["transition_p50_ms"])
    one_txn = status["details"]["one_txn_floor"]
    assert one_txn["transition"]["n"] == one_txn["one_txn"]["n"] == 20

    fleet = scenarios["fleet"]
    _check_fleet(fleet, 2, 1, 0.5)
    for metrics in fleet["metrics"].values():
        assert _positive(metrics["etcd_cpu_per_1000"])

    verdicts = {f["name"]: f["verdict"] for f in data["floors"]}
    assert verdicts["contention lockd handoff p50 vs etcd-mutex handoff p50"] == "info"
    for name in (
        "contention handoff p50 <= 1.5 commits (issue 25)",
        "contention handoff p99 <= 4 commits (issue 25)",
        "uncontended p50 <= 1.1 x etcd two-txn floor (issue 25)",
        "status fenced transition p50 <= 1.1 x one-txn floor (issue 25)",
        "fleet acq/s >= 0.8 x raw two-txn floor, 2 processes x 1 threads (issue 25)",
    ):
        assert verdicts[name] in ("PASS", "FAIL")

    table = report.table()
    number = r"\d+\.\d+"
    for line in (
        rf"(PASS|FAIL)  contention handoff p50 <= 1\.5 commits \(issue 25\) +required <= 1\.5 commits +measured "
        rf"{number} ms / commit {number} ms = {number} commits",
        rf"(PASS|FAIL)  contention handoff p99 <= 4 commits \(issue 25\) +required <= 4 commits +measured "
        rf"{number} ms / commit {number} ms = {number} commits",
        rf"info  contention lockd handoff p50 vs etcd-mutex handoff p50 +required information +measured "
        rf"{number} ms \({number} commits\) vs {number} ms \({number} commits\) = {number}x",
        r"   etcd-mutex +\d",  # its row in the contention table
    ):
        assert re.search(line, table), line
    for text in (
        "etcd CPU s/1000 acq",
        "fenced p50 ms",
        "vs one-txn",
        "etcd one-txn floor",
        "lockd / raw two-txn floor = ",
        "required <= 1.1 x one-txn floor",
        "required <= 1.1 x two-txn floor",
        "required >= 0.8 x raw floor",
    ):
        assert text in table


def test_cpu_seconds_of_a_running_process_grows_and_is_unknown_without_a_pid() -> None:
    before = cpu_seconds(os.getpid())
    assert before is not None and before > 0
    now = before
    while now is not None and now - before < 0.05:  # burn CPU until /proc has counted some
        sum(range(100_000))
        now = cpu_seconds(os.getpid())
    assert now is not None and now > before
    assert cpu_seconds(None) is None
    with open("/proc/sys/kernel/pid_max") as f:
        assert cpu_seconds(int(f.read()) + 1) is None  # above pid_max: no such process
