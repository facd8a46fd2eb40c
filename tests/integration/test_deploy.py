"""deploy/ works as shipped: unit files verify, the OCF agent passes ocf-tester on a real `lockd serve`, the
local cluster demo starts and stops cleanly, and the monitoring files name only metrics lockd really exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tooz.coordination
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.etcd_process import EtcdMember, free_port
from tests.procs import lockd_serve, wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
LOCKD_BIN = Path(sys.executable).parent / "lockd"
OCF_TESTER = shutil.which("ocf-tester") or ("/usr/sbin/ocf-tester" if Path("/usr/sbin/ocf-tester").exists() else None)
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes (it only waits for its parent to reap it)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (a test's own temp path, so only its processes match)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def serve(etcd: EtcdMember, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `lockd serve` subprocess on the session etcd; yields its base URL."""
    state = tmp_path_factory.mktemp("serve")
    backend = f"lockd+etcd3+http://{etcd.endpoint}"
    with lockd_serve(state, "--backend-url", backend, "--state-dir", str(state), "--lease-ttl", "3") as url:
        yield url


# -- systemd ---------------------------------------------------------------------------------------------------


def _unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_lockd_unit_is_hardened_and_restarts() -> None:
    unit = _unit_settings(DEPLOY / "systemd" / "lockd.service")
    assert unit["User"] == ["lockd"] and unit["Group"] == ["lockd"]
    assert unit["StateDirectory"] == ["lockd"]
    assert unit["Restart"] == ["on-failure"]
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "RestrictSUIDSGID": "yes", "CapabilityBoundingSet": "",
    }.items():  # fmt: skip
        assert unit.get(key) == [value], key
    assert unit["ExecStart"][0].split()[1:3] == ["serve", "--config-file"]
    dropin = _unit_settings(DEPLOY / "systemd" / "cinder-volume.service.d" / "lockd.conf")
    assert dropin["Requires"] == ["lockd.service"] and dropin["After"] == ["lockd.service"]
    assert "lockd-wait-ready" in dropin["ExecStartPre"][0] and "/readyz" in dropin["ExecStartPre"][0]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (Debian package systemd)")
def test_unit_files_pass_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    """The units as shipped, with /opt/lockd/bin pointed at this checkout's executables."""
    bin_dir, units = tmp_path / "bin", tmp_path / "units"
    (units / "cinder-volume.service.d").mkdir(parents=True)
    bin_dir.mkdir()
    (bin_dir / "lockd").symlink_to(LOCKD_BIN)
    (bin_dir / "lockd-wait-ready").symlink_to(DEPLOY / "systemd" / "lockd-wait-ready")
    for source, target in (
        ("lockd.service", "lockd.service"),
        ("cinder-volume.service.d/lockd.conf", "cinder-volume.service.d/lockd.conf"),
    ):
        text = (DEPLOY / "systemd" / source).read_text().replace("/opt/lockd/bin", str(bin_dir))
        (units / target).write_text(text)
    # a stand-in for the distribution's cinder-volume unit, so the drop-in is loaded and checked with it
    (units / "cinder-volume.service").write_text("[Unit]\nDescription=stub\n[Service]\nExecStart=/bin/true\n")
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(units / "lockd.service"), str(units / "cinder-volume.service")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    # exposure 0.0 (locked down) .. 10.0 (unprotected); systemd calls up to 3.9 "OK"
    security = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=30", str(units / "lockd.service")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert security.returncode == 0, security.stdout[-2000:] + security.stderr


def test_wait_ready_script_waits_for_a_real_lockd(serve: str) -> None:
    script = str(DEPLOY / "systemd" / "lockd-wait-ready")
    ok = subprocess.run([script, serve + "/readyz", "10"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    closed = f"http://127.0.0.1:{free_port()}/readyz"
    down = subprocess.run([script, closed, "1"], capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "not ready after 1s" in down.stderr
    bad = subprocess.run([script, closed, "soon"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "whole number" in bad.stderr


# -- Pacemaker -------------------------------------------------------------------------------------------------


def _agent_env(tmp_path: Path, api_port: int, **params: str) -> dict[str, str]:
    env = {**os.environ, "OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": "lockd-test"}
    defaults = {
        "binary": str(LOCKD_BIN), "port": str(api_port), "user": "", "state_dir": str(tmp_path / "state"),
        "log_file": str(tmp_path / "lockd.log"), "pid_file": str(tmp_path / "lockd.pid"),
    }  # fmt: skip
    for key, value in {**defaults, **params}.items():
        env[f"OCF_RESKEY_{key}"] = value
    return env


def _agent(action: str, env: dict[str, str]) -> int:
    return subprocess.run([str(DEPLOY / "pacemaker" / "lockd"), action], env=env, timeout=90).returncode


@pytest.mark.skipif(OCF_TESTER is None, reason="ocf-tester not installed (scripts/install-system-deps.sh)")
def test_ocf_agent_passes_ocf_tester_against_real_lockd(etcd: EtcdMember, tmp_path: Path) -> None:
    port = free_port()
    params = {
        "binary": str(LOCKD_BIN), "backend_url": f"lockd+etcd3+http://{etcd.endpoint}", "port": str(port),
        "user": "", "state_dir": str(tmp_path / "state"), "log_file": str(tmp_path / "lockd.log"),
        "pid_file": str(tmp_path / "lockd.pid"),
    }  # fmt: skip
    args = [OCF_TESTER, "-n", "lockd-test"]
    for key, value in params.items():
        args += ["-o", f"{key}={value}"]
    # ocf-tester runs the agent as user nobody to check its permissions: give it a copy nobody can reach
    # (the checkout may sit in a 0700 directory, as mktemp -d and pytest's tmp_path both make).
    public = Path(tempfile.mkdtemp(prefix="lockd-ocf-"))
    public.chmod(0o755)
    agent = public / "lockd"
    shutil.copy2(DEPLOY / "pacemaker" / "lockd", agent)
    try:
        result = subprocess.run([*args, str(agent)], capture_output=True, text=True,
                                timeout=240, env={**os.environ, "OCF_ROOT": "/usr/lib/ocf"})  # fmt: skip
        assert result.returncode == 0 and "passed all tests" in result.stdout, result.stdout + result.stderr
        # it really ran lockd: the log has the serve banner from its starts
        assert f"lockd admin API on http://127.0.0.1:{port}" in (tmp_path / "lockd.log").read_text()
        assert not _ready(f"http://127.0.0.1:{port}"), "ocf-tester ends with stop; lockd must be gone"
        assert not (tmp_path / "lockd.pid").exists()
    finally:
        _agent("stop", _agent_env(tmp_path, port, backend_url=params["backend_url"]))
        shutil.rmtree(public, ignore_errors=True)


def test_ocf_monitor_fails_when_etcd_goes_and_stop_leaves_nothing(tmp_path: Path) -> None:
    """A lockd that runs but cannot reach etcd is a failed resource (1) to the /readyz monitor (depth 10), while
    the process check (depth 0) still finds it running; stop cleans up."""
    member = EtcdMember("ocf", tmp_path / "etcd")
    member.start()
    port = free_port()
    env = _agent_env(tmp_path, port, backend_url=f"lockd+etcd3+http://{member.endpoint}?timeout=1")
    try:
        assert _agent("validate-all", env) == 0
        assert _agent("monitor", env) == 7
        assert _agent("start", env) == 0, (tmp_path / "lockd.log").read_text()
        deep = {**env, "OCF_CHECK_LEVEL": "10"}
        assert _agent("monitor", env) == 0 and _agent("monitor", deep) == 0
        pid = int((tmp_path / "lockd.pid").read_text())
        member.kill()
        wait_for(lambda: _agent("monitor", deep) == 1, timeout=60, what="monitor to report the lost backend")
        assert _agent("monitor", env) == 0  # the process is there: the depth-0 check says no more
        assert _agent("stop", env) == 0
        assert not _alive(pid)
        assert _agent("monitor", env) == 7
        assert _agent("stop", env) == 0  # stopping a stopped resource succeeds
    finally:
        _agent("stop", env)
        member.stop()


def test_ocf_never_forgets_a_live_process_pid_file(tmp_path: Path) -> None:
    """Between the fork and the exec of `lockd serve`, the PID in the file is still a copy of the agent's shell. A
    check that sees a live process that is not (yet) lockd says "not running" but must keep the file: the old
    agent deleted it, and the lockd that process became was then invisible to every later monitor and stop, an
    orphan holding the node's port (a three-node run once ended with one). Played here by a shell that execs a
    stand-in `... serve` after a second; the old agent fails at "kept" (the file is gone)."""
    # as Pacemaker runs the recurring depth-0 monitor (an interval set: not a probe, so it gives its reason)
    env = {**_agent_env(tmp_path, free_port()), "OCF_CHECK_LEVEL": "0", "OCF_RESKEY_CRM_meta_interval": "2000"}
    pid_file = tmp_path / "lockd.pid"
    stand_in = tmp_path / "stand-in.sh"  # a script, so that its command line names no "serve" before the exec
    stand_in.write_text(f"sleep 1.5\nexec {sys.executable} -c 'import time; time.sleep(60)' serve\n")
    child = subprocess.Popen(["sh", str(stand_in)])
    # Reaped the moment it exits, as init reaps a real lockd (the agent's shell is gone): unreaped, the stopped
    # stand-in stays a zombie that `kill -0` still finds, and the agent's stop waited out its whole timeout (15 s).
    threading.Thread(target=child.wait, daemon=True).start()
    try:
        pid_file.write_text(f"{child.pid}\n")
        early = subprocess.run([str(DEPLOY / "pacemaker" / "lockd"), "monitor"], env=env, capture_output=True,
                               text=True, timeout=30)  # fmt: skip
        assert early.returncode == 7, early
        assert f"process {child.pid} is not lockd serve" in early.stderr, early.stderr
        kept = pid_file.exists() and pid_file.read_text().strip() == str(child.pid)
        assert kept, "a live process's PID file was deleted"
        wait_for(lambda: _agent("monitor", env) == 0, timeout=30, what="the stand-in to count as lockd")
        assert _agent("stop", env) == 0
        assert child.wait(timeout=30) is not None and not pid_file.exists()
        # and a PID file whose process is gone is stale: not running (the monitor only reads), and stop removes it
        pid_file.write_text(f"{child.pid}\n")
        assert _agent("monitor", env) == 7 and pid_file.exists()
        assert _agent("stop", env) == 0 and not pid_file.exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_ocf_stop_takes_the_embedded_etcd_down_too(tmp_path: Path) -> None:
    """With no backend, lockd runs its own etcd; stopping the resource must not leave that etcd behind."""
    env = _agent_env(tmp_path, free_port())
    try:
        assert _agent("start", env) == 0, (tmp_path / "lockd.log").read_text()
        assert _processes_mentioning(str(tmp_path / "state")), "expected an embedded etcd under the state dir"
        assert _agent("stop", env) == 0
        wait_for(lambda: not _processes_mentioning(str(tmp_path / "state")), timeout=30, what="etcd to exit")
    finally:
        _agent("stop", env)


def test_ocf_validate_refuses_bad_parameters(tmp_path: Path) -> None:
    assert _agent("validate-all", _agent_env(tmp_path, 7170, port="seventy")) == 6  # OCF_ERR_CONFIGURED
    assert _agent("validate-all", _agent_env(tmp_path, 7170, binary=str(tmp_path / "missing"))) == 5  # INSTALLED
    assert _agent("validate-all", _agent_env(tmp_path, 7170, user="no-such-user-lockd")) == 5
    assert _agent("frobnicate", _agent_env(tmp_path, 7170)) == 3  # OCF_ERR_UNIMPLEMENTED


# -- local cluster demo ----------------------------------------------------------------------------------------


def _demo(command: str, demo_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCKD_DEMO_DIR": str(demo_dir), "LOCKD_BIN": str(LOCKD_BIN)}
    env.pop("LOCKD_DEMO_BASE_PORT", None)
    return subprocess.run(
        ["bash", str(DEPLOY / "local-cluster.sh"), command], env=env, capture_output=True, text=True, timeout=180
    )


def test_local_cluster_demo_two_sidecars_see_one_lock_and_stop_cleanly(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    try:
        started = _demo("start", demo)
        assert started.returncode == 0, started.stdout + started.stderr
        ports = dict(line.split("=", 1) for line in (demo / "ports.env").read_text().split())
        pids = [
            int((demo / f"{name}.pid").read_text()) for name in ("etcd-1", "etcd-2", "etcd-3", "lockd-1", "lockd-2")
        ]
        sidecars = [ports["LOCKD_URL_1"], ports["LOCKD_URL_2"]]
        assert all(_ready(url) for url in sidecars)
        assert _demo("status", demo).returncode == 0

        # a client on the third member holds a lock; both sidecars (on members 1 and 2) report the same holder
        endpoints = ports["ETCD_ENDPOINTS"].split(",")
        url = f"lockd+etcd3+http://{endpoints[2]}?endpoints={endpoints[0]}&lease_ttl=5"
        coord = tooz.coordination.get_coordinator(url, b"demo-client")
        coord.start()
        try:
            lock = coord.get_lock(b"demo-" + os.urandom(4).hex().encode())
            assert lock.acquire(blocking=False)
            name = lock.name.decode()
            seen = [wait_for(lambda u=u: _lock_on(u, name), timeout=15, what=f"{u} to see the lock") for u in sidecars]
            assert seen[0]["token"] == seen[1]["token"] == lock.token
            assert seen[0]["holder"] == seen[1]["holder"] and seen[0]["holder"]["member"] == "demo-client"
            assert lock.release()
        finally:
            coord.stop()

        stopped = _demo("stop", demo)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert [pid for pid in pids if _alive(pid)] == []
        assert _processes_mentioning(str(demo)) == []
        assert _demo("status", demo).returncode == 3
    finally:
        _demo("stop", demo)


def _lock_on(base: str, name: str) -> dict | None:
    answer = httpx.get(f"{base}/v1/locks/{name}", timeout=5)
    return answer.json() if answer.status_code == 200 else None


# -- monitoring ------------------------------------------------------------------------------------------------


def _series_named(text: str) -> set[str]:
    return set(re.findall(r"\blockd_[a-z0-9_]+\b", text))


def test_monitoring_files_use_only_metrics_lockd_exports(serve: str) -> None:
    assert httpx.get(serve + "/readyz", timeout=5).status_code == 200  # so the request counter has a sample
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(httpx.get(serve + "/metrics", timeout=5).text):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)

    rules = yaml.safe_load((DEPLOY / "monitoring" / "lockd-alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] and rule["labels"]["severity"] in ("warning", "critical"), rule
            assert rule["annotations"]["summary"], rule
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"LockdLeaseLost", "LockdLockBroken", "LockdLongWaits"} <= names

    dashboard = json.loads((DEPLOY / "monitoring" / "lockd-dashboard.json").read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [var["definition"] for var in dashboard["templating"]["list"] if "definition" in var]

    used = set().union(*(_series_named(expr) for expr in exprs))
    assert used, "no lockd_* series found in the monitoring files"
    missing = used - set(exported)
    assert not missing, f"monitoring files use series /metrics does not have: {sorted(missing)}"
    # label matchers on the request counter must name labels it has
    for expr in exprs:
        for labels in re.findall(r"lockd_api_requests_total\{([^}]*)\}", expr):
            for label in re.findall(r"([a-z_]+)\s*=~?", labels):
                assert label in exported["lockd_api_requests_total"] | {"job", "instance"}, (label, expr)


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    """promtool (Debian's prometheus package; scripts/install-system-deps.sh) checks the rules' syntax and
    expressions, then runs lockd-alerts.test.yml: the deadlock alert fires after 10 s, the wait alert on a
    template whose waits are far beyond its holds and not on one whose are not."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must check the alert rules: promtool is missing (apt-get install prometheus)")
        pytest.skip("promtool is missing: apt-get install prometheus (scripts/install-system-deps.sh does)")
    monitoring = DEPLOY / "monitoring"
    for command in (["check", "rules", "lockd-alerts.yml"], ["test", "rules", "lockd-alerts.test.yml"]):
        done = subprocess.run([promtool, *command], cwd=monitoring, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"promtool {' '.join(command)}:\n{done.stdout}{done.stderr}"
    rules = yaml.safe_load((monitoring / "lockd-alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"LockdDeadlock", "LockdWaitsFarBeyondHolds"} <= names


def test_every_file_the_docs_link_under_deploy_exists() -> None:
    """Relative links in deploy/ READMEs point at real files (a moved file breaks the guide, not silently)."""
    for readme in DEPLOY.rglob("*.md"):
        links = re.findall(r"\]\((\.{1,2}/[^)#]+|[\w.-]+\.(?:yml|json|md|example))\)", readme.read_text())
        for target in links:
            assert (readme.parent / target).exists(), f"{readme.relative_to(REPO)} links to missing {target}"


def test_agent_and_scripts_are_executable() -> None:
    for path in (DEPLOY / "pacemaker" / "lockd", DEPLOY / "local-cluster.sh", DEPLOY / "systemd" / "lockd-wait-ready"):
        assert os.access(path, os.X_OK), path
