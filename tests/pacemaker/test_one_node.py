"""The guide's Pacemaker deployment on a live one-node cluster (conftest.py): what the constraints and our OCF agent
do when lockd dies, when etcd goes away, and when an operator stops lockd.

Each test starts and ends with everything Started and Cinder creating volumes. What would make them fail:
- no order constraint (or an optional one): cinder-volume keeps its PID when lockd is restarted, and a stop of
  lockd does not wait for cinder-volume's stop (its "Initiating stop" is not after cinder-volume's result);
- a monitor that only checks the process (not /readyz): an unreachable etcd never fails lockd, so cinder-volume
  keeps running without working locks.
(Both checked by breaking deploy/pacemaker/configure.sh and the agent that way: the tests named fail.)
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid

import httpx
import pytest
import tooz.coordination
from inotify_simple import INotify, flags

from tests.pacemaker.conftest import PROCESS_CHECK_INTERVAL, READYZ_CHECK_INTERVAL, Deployed, LogCursor
from tests.pacemaker.node import alive
from tests.procs import wait_for

pytestmark = [pytest.mark.pacemaker, pytest.mark.timeout(600)]  # the first test also starts the cluster


def back_to_all_started(cluster: Deployed, tag: str) -> None:
    """Everything Started again, nothing failed for good, and Cinder creates volumes on the node."""
    wait_for(cluster.all_started, 120, "lockd and cinder-volume Started", interval=0.5)
    cluster.wait_cinder_volume_up()
    statuses = cluster.create_volumes(2, tag)
    assert set(statuses.values()) == {"available"}, statuses


def monitor_failed(cluster: Deployed, exitstatus: str) -> bool:
    """crm_mon lists a failed lockd monitor with this exit status ("not running", "error")."""
    failures = cluster.node.failures()
    return any(f["op_key"].startswith("lockd_monitor") and f.get("exitstatus") == exitstatus for f in failures)


def test_configuration_runs_cinder_volume_after_lockd_and_serves_volumes(deployed: Deployed) -> None:
    constraints = deployed.node.run("pcs", "constraint").stdout
    assert "start lockd-clone then start cinder-volume-clone" in constraints, constraints
    assert "cinder-volume-clone with lockd-clone (score:INFINITY)" in constraints, constraints
    cursor = LogCursor(deployed.node.log, from_start=True)
    assert cursor.position(("result", "lockd", "start")) < cursor.position(("initiate", "cinder-volume", "start"))
    back_to_all_started(deployed, "first")
    hosts = {run.host for run in deployed.operations()}
    assert any(host.endswith(f"-{deployed.node.name}@demo") for host in hosts), hosts
    locks = deployed.lockd_locks()
    assert locks.returncode == 0, locks.stderr


def test_lockd_killed_is_restarted_and_cinder_volume_restarted_after_it(deployed: Deployed) -> None:
    lockd, cinder_volume = deployed.lockd_pid(), deployed.cinder_volume_pid()
    assert lockd and cinder_volume
    cursor = LogCursor(deployed.node.log)
    # The worst case for the floor: the kill lands just after the process check, a whole interval before the next.
    after_a_process_check(deployed)
    killed_at = time.time()
    os.kill(lockd, signal.SIGKILL)
    # noticed by a monitor (not by anything else): what an operator sees meanwhile
    wait_for(lambda: monitor_failed(deployed, "not running"), 30, "lockd's monitor to report it not running")
    print("\n" + deployed.crm_mon() + "\n" + repr(deployed.lockd_locks()))
    wait_for(lambda: deployed.lockd_pid() not in (None, lockd) and deployed.ready(), 60, "lockd ready again")
    wait_for(lambda: deployed.cinder_volume_pid() not in (None, cinder_volume), 120, "a new cinder-volume")
    assert not alive(cinder_volume), "the old cinder-volume survived lockd's recovery"
    # The order constraint at work: cinder-volume stopped before lockd started again, and started after it.
    assert cursor.position(("result", "cinder-volume", "stop")) < cursor.position(("initiate", "lockd", "start"))
    assert cursor.position(("result", "lockd", "start")) < cursor.position(("initiate", "cinder-volume", "start"))
    # (the new cinder-volume's PID file is written before its start operation returns to Pacemaker)
    wait_for(lambda: ("result", "cinder-volume", "start") in cursor.events(), 120, "cinder-volume's start logged")
    print("\n" + recovery_breakdown(cursor, killed_at))
    back_to_all_started(deployed, "after-kill")


def after_a_process_check(cluster: Deployed) -> None:
    """Return just after lockd's depth-0 monitor has run. Both monitors open lockd's PID file, and nothing else does
    while the kill test waits; the /readyz monitor also asks /readyz, which tells the two apart."""
    with INotify() as inotify:
        inotify.add_watch(cluster.base / "rsctmp", flags.OPEN)
        deadline = time.monotonic() + 5 * PROCESS_CHECK_INTERVAL
        while time.monotonic() < deadline:
            asked = readyz_answers(cluster)
            if any(event.name == "lockd.pid" for event in inotify.read(timeout=1000)):
                time.sleep(0.1)  # the check's last steps (kill -0, /proc) take milliseconds
                if readyz_answers(cluster) == asked:
                    return
    raise AssertionError(f"no depth-0 monitor of lockd seen in {5 * PROCESS_CHECK_INTERVAL:g}s")


def readyz_answers(cluster: Deployed) -> int:
    """How many times lockd has answered GET /readyz with 200 (its /metrics): the /readyz monitor's probe, and
    nothing else asks while the kill test waits."""
    metrics = httpx.get(f"{cluster.lockd_url}/metrics", timeout=5).text
    found = re.search(r'^lockd_api_requests_total\{method="GET",route="/readyz",status="200"\} (\S+)$', metrics, re.M)
    return int(float(found.group(1))) if found else 0


def recovery_breakdown(cursor: LogCursor, killed_at: float) -> str:
    """Where the time from the kill to lockd ready again went, from Pacemaker's log (a report, not a check: the
    figures depend on the machine's load; docs/operations.md quotes them with this test as their command)."""
    failed_at, noticed_by = cursor.first_failed_monitor("lockd")
    detected = failed_at - killed_at
    stop, lockd_stop, start = (cursor.seconds(*step) for step in (
        ("cinder-volume", "stop"), ("lockd", "stop"), ("lockd", "start")))  # fmt: skip
    ready = cursor.at(("result", "lockd", "start")) - killed_at  # the agent's start returns once /readyz is 200
    scheduling = ready - detected - stop - lockd_stop - start
    cinder_volume = cursor.at(("result", "cinder-volume", "start")) - killed_at

    def against(interval: float) -> str:
        floor = interval + start
        verdict = "within" if ready <= floor else f"over by {ready - floor:.1f}s"
        return f"{interval:g}s + start = {floor:.1f}s: {verdict}"

    return (
        f"lockd killed -> ready again: {ready:.1f}s = detection {detected:.1f}s (by {noticed_by}; process check "
        f"every {PROCESS_CHECK_INTERVAL:g}s) + cinder-volume stop {stop:.1f}s + lockd stop {lockd_stop:.1f}s + "
        f"lockd start {start:.1f}s + Pacemaker between steps {scheduling:.1f}s; floor with the /readyz monitor's "
        f"interval {against(READYZ_CHECK_INTERVAL)}; with the process check's {against(PROCESS_CHECK_INTERVAL)}; "
        f"cinder-volume started again after {cinder_volume:.1f}s"
    )


def test_etcd_unreachable_stops_cinder_volume_until_etcd_is_back(deployed: Deployed) -> None:
    cinder_volume = deployed.cinder_volume_pid()
    assert cinder_volume
    cursor = LogCursor(deployed.node.log)
    down_at = time.time()
    deployed.etcd.kill()
    try:
        wait_for(lambda: not alive(cinder_volume), 60, "cinder-volume stopped after lockd's monitor failed")
        assert monitor_failed(deployed, "error"), deployed.node.failures()
        # A lock taken the way Cinder takes it fails with a clear error and never runs the guarded work.
        coordinator = tooz.coordination.get_coordinator(deployed.backend_url, b"pm-test")
        ran = []
        with pytest.raises(tooz.coordination.ToozError) as refused:
            coordinator.start()
            try:
                with coordinator.get_lock(f"pm-{uuid.uuid4().hex[:8]}".encode()):
                    ran.append(True)
            finally:
                coordinator.stop()
        assert not ran
        assert deployed.etcd.endpoint in str(refused.value), str(refused.value)
        # A volume request while etcd is down: accepted by the API, never run by a driver without its locks.
        requested = deployed.create_volumes(1, "during-outage", bound=0)
        for _ in range(20):  # cinder-volume stays down as long as etcd does
            assert deployed.cinder_volume_pid() is None
            time.sleep(0.25)
        print("\n" + deployed.crm_mon() + "\n" + repr(deployed.lockd_locks()))
    finally:
        back_at = time.time()
        deployed.etcd.start()
    back_to_all_started(deployed, "after-outage")
    assert cursor.position(("result", "cinder-volume", "stop")) < cursor.position(("initiate", "lockd", "stop"))
    during = [run for run in deployed.operations() if down_at <= run.start <= back_at]
    assert not during, f"driver operations ran while etcd was unreachable: {during}"
    statuses = deployed.settle(list(requested))
    assert all(status in ("available", "error") for status in statuses.values()), statuses


def test_clean_stop_of_the_lockd_clone_stops_cinder_volume_first(deployed: Deployed) -> None:
    cursor = LogCursor(deployed.node.log)
    meta = ("crm_resource", "--resource", "lockd-clone", "--meta")
    deployed.node.run(*meta, "--set-parameter", "target-role", "--parameter-value", "Stopped")
    try:
        wait_for(lambda: deployed.roles() == {"lockd": "Stopped", "cinder-volume": "Stopped"}, 120, "both stopped")
        assert deployed.lockd_pid() is None and deployed.cinder_volume_pid() is None
        assert cursor.position(("result", "cinder-volume", "stop")) < cursor.position(("initiate", "lockd", "stop"))
        locks = deployed.lockd_locks()
        assert locks.returncode == 1 and len(locks.stderr.strip().splitlines()) == 1, locks
        print("\n" + deployed.crm_mon() + "\n" + repr(locks))
    finally:
        deployed.node.run(*meta, "--delete-parameter", "target-role")
    back_to_all_started(deployed, "after-stop")
