"""``lockd bench`` with tiny sizes: it runs, its JSON has the expected fields, and the numbers are sane.

Speed is never asserted here (the machine is shared and small); the bench itself compares against stock tooz.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from lockd.cli.main import main


def _bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_on_given_etcd_reports_every_scenario(
    etcd_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "bench.png"
    code, out, err = _bench(
        capsys,
        "--backend-url", etcd_url,
        "--scenario", "uncontended", "--scenario", "contention", "--scenario", "leases", "--scenario", "crash",
        "--ops", "10", "--processes", "2", "--cycles", "4", "--lease-cycles", "5", "--lease-ttl", "2",
        "--json", "--plot", str(plot),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["machine"]["nproc"] >= 1 and report["machine"]["etcd_version"] != "unknown"
    scenarios = report["scenarios"]
    assert set(scenarios) == {"uncontended", "contention", "leases", "crash"}

    uncontended = scenarios["uncontended"]["metrics"]
    assert set(uncontended) == {"lockd", "tooz", "oslo-file", "etcd-floor"}
    for metrics in uncontended.values():
        assert metrics["n"] == 10
        assert all(_positive(metrics[k]) for k in ("p50_ms", "p99_ms", "ops_per_s"))
        assert metrics["p50_ms"] <= metrics["p99_ms"] <= metrics["max_ms"]

    contention = scenarios["contention"]["metrics"]
    assert set(contention) == {"lockd", "etcd-mutex", "tooz", "oslo-file"}
    for metrics in contention.values():
        assert metrics["acquisitions"] == 8
        assert metrics["counter"] == metrics["counter_expected"] == 8 and metrics["counter_exact"] is True
        assert metrics["overlaps"] == 0
        assert _positive(metrics["throughput_per_s"]) and _positive(metrics["max_wait_ms"])
        assert 0.5 <= metrics["jain"] <= 1.0  # 1/n .. 1 for n = 2 workers
    assert contention["lockd"]["leases_live"] <= 2  # one session per worker process

    leases = scenarios["leases"]["metrics"]
    assert leases["lockd"]["leases_live"] == 1 and leases["lockd"]["leases_after_stop"] == 0
    assert leases["tooz"]["leases_live"] >= 5  # stock tooz: a lease per acquire, never revoked

    crash = scenarios["crash"]["metrics"]
    for metrics in crash.values():
        assert _positive(metrics["sigkill_s"]) and metrics["clean_stop_s"] >= 0

    verdicts = {f["name"]: f["verdict"] for f in report["floors"]}
    assert set(verdicts.values()) <= {"PASS", "FAIL", "n/a", "info"}
    assert verdicts["contention counter exact"] == "PASS"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_bench_without_backend_starts_and_stops_its_own_etcd(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _bench(
        capsys,
        "--scenario", "uncontended", "--scenario", "status",
        "--ops", "5", "--status-ops", "10", "--status-racers", "2", "--status-rounds", "1", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["machine"]["etcd"].startswith("private etcd started by the bench")
    status = report["scenarios"]["status"]
    if status["skipped"]:  # the status bench is another module's; when absent or broken the note says why
        assert status["notes"]
    else:
        store = status["metrics"]["lockd-status"]
        assert _positive(store["transitions_per_s"]) and _positive(store["fresh_per_s"])
        assert store["race_winners_min"] == store["race_winners_max"] == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--processes", "0"],
        ["--cycles", "many"],
        ["--scenario", "nope"],
        ["--lease-ttl", "0.5"],
        ["--backend-url", "redis://127.0.0.1:6379"],
        ["--plot", "out.jpg"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        code = main(["bench", *args])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err


def test_unreachable_etcd_is_a_runtime_failure_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.etcd_process import free_port

    url = f"lockd+etcd3+http://127.0.0.1:{free_port()}?timeout=1"
    code, _, err = _bench(capsys, "--backend-url", url, "--scenario", "uncontended", "--quiet")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "unreachable" in err
