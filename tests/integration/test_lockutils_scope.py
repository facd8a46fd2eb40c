"""The lock scope of patch_lockutils on real etcd: host-local names stay oslo file locks alone, the rest also lockd's.

A host-local lock must be *exactly* what oslo makes without the patch: a file lock in ``lock_path`` that other
processes of the host (patched or not, e.g. nova-compute sharing os-brick's lock_path) exclude through, and
nothing in etcd. The processes of a test share one ``OSLO_LOCK_PATH``: they are one host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import fasteners
import pytest
import tooz.coordination
from oslo_concurrency import lockutils
from oslo_config import cfg

import drivers_shim
from drivers_shim import lockutils_patch, scope
from drivers_shim.scope import DEFAULT_HOST_LOCAL_LOCKS, LockScope, host_local_from_env, parse_host_local
from lockd import runtime
from lockd.errors import UsageError
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from tests.procs import ChildProcess

# Driver-like code with no lockd in it: one oslo external lock, held until a line arrives on stdin. The patch
# and its scope come only from the environment (LOCKD_PATCH_LOCKUTILS=1, LOCKD_HOST_LOCAL_LOCKS, the .pth hook).
LOCKER = r"""
import json, sys
from oslo_concurrency import lockutils

cfg = json.loads(sys.argv[1])
try:
    with lockutils.lock(cfg["name"], "cinder-", external=True, blocking=cfg["blocking"]) as lock:
        kind = "file" if type(lock) is lockutils.InterProcessLock else type(lock).__name__
        print(json.dumps({"event": "held", "kind": kind, "patched_by": lockutils.external_lock.__module__}),
              flush=True)
        if cfg["hold"]:
            sys.stdin.readline()
except lockutils.AcquireLockFailedException:
    print(json.dumps({"event": "refused"}), flush=True)
else:
    print(json.dumps({"event": "released"}), flush=True)
"""


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LOCKD_* / OSLO_* setting of the test run leaks into the workers started by a test."""
    for var in [v for v in os.environ if v.startswith(("LOCKD_", "OSLO_"))]:
        monkeypatch.delenv(var)


@pytest.fixture
def one_host(tmp_path: Path, etcd_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What the workers of a test inherit: the patch on through the start-up hook and one shared lock_path."""
    clean_environment(monkeypatch)
    lock_path = tmp_path / "lock_path"
    lock_path.mkdir()
    monkeypatch.setenv("OSLO_LOCK_PATH", str(lock_path))
    monkeypatch.setenv("LOCKD_PATCH_LOCKUTILS", "1")
    monkeypatch.setenv("LOCKD_BACKEND_URL", etcd_url)
    return lock_path


def locker(workers: list[ChildProcess], name: str, blocking: bool = True, hold: bool = True) -> ChildProcess:
    """A child taking ``lockutils.lock(name, 'cinder-', external=True)``; with ``hold`` it keeps it until told."""
    child = ChildProcess("-c", LOCKER, json.dumps({"name": name, "blocking": blocking, "hold": hold}))
    workers.append(child)
    return child


def keys_naming(etcd: EtcdClient, name: str) -> list[bytes]:
    """Every key of the whole keyspace whose bytes contain ``name``: lock, queue, member or audit keys alike."""
    kvs, _ = etcd.range(b"\x00", b"\x00", keys_only=True)
    return [kv.key for kv in kvs if name.encode() in kv.key]


def file_lock_is_held(path: Path) -> bool:
    """True when some other process holds the fcntl lock on ``path`` (tried from here, with plain fasteners)."""
    probe = fasteners.InterProcessLock(str(path))
    if probe.acquire(blocking=False):
        probe.release()
        return False
    return True


# -- the scope from the environment, through the real start-up hook ----------------------------------------------


def test_host_local_name_excludes_processes_through_the_lock_file_and_leaves_etcd_alone(
    one_host: Path,
    workers: list[ChildProcess],
    coordinator: tooz.coordination.CoordinationDriver,
    lock_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCKD_HOST_LOCAL_LOCKS", f"default,cinder-{lock_name}-local*")
    name = f"{lock_name}-local-1"
    holder = locker(workers, name)
    assert holder.wait_event("held") == {"event": "held", "kind": "file", "patched_by": "drivers_shim.lockutils_patch"}

    lock_file = one_host / f"cinder-{name}"
    assert file_lock_is_held(lock_file)  # oslo's own file lock: an unpatched process (nova-compute) is kept out
    assert locker(workers, name, blocking=False).wait_event("refused", "held") == {"event": "refused"}
    assert keys_naming(coordinator.etcd, lock_name) == []

    holder.send("release")
    holder.wait_event("released")
    assert not file_lock_is_held(lock_file)
    assert locker(workers, name, blocking=False, hold=False).wait_event("refused", "held")["event"] == "held"
    assert keys_naming(coordinator.etcd, lock_name) == []


def test_a_name_outside_the_scope_is_a_lockd_lock(
    one_host: Path,
    workers: list[ChildProcess],
    coordinator: tooz.coordination.CoordinationDriver,
    lock_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOCKD_HOST_LOCAL_LOCKS", f"default,cinder-{lock_name}-local*")
    name = f"{lock_name}-shared"
    key = keys.lock_key(f"cinder-{name}")
    holder = locker(workers, name)
    assert holder.wait_event("held")["kind"] == "ExternalLock"
    assert coordinator.etcd.get(key) is not None  # /tooz/locks<name> exists while it is held
    assert key in keys_naming(coordinator.etcd, lock_name)  # (so finding no key elsewhere is not a blind probe)
    assert locker(workers, name, blocking=False).wait_event("refused", "held") == {"event": "refused"}
    assert file_lock_is_held(one_host / f"cinder-{name}")  # and oslo's file lock, for the host's unpatched processes

    holder.send("release")
    holder.wait_event("released")
    assert coordinator.etcd.get(key) is None


# Which kind of lock `external_lock()` gives for a few names, in a child started with the given environment.
# external_lock() connects to nothing (a lockd lock connects at acquire), so no backend is needed.
PROBE = r"""
import json, sys
from oslo_concurrency import lockutils

kinds = {}
for name, prefix in json.loads(sys.argv[1]):
    lock = lockutils.external_lock(name, prefix, sys.argv[2])
    kinds[prefix + name] = "file" if type(lock) is lockutils.InterProcessLock else type(lock).__name__
print(json.dumps(kinds))
"""
NAMES = [("lioadm", "cinder-"), ("nvmetcli", "cinder-"), ("connect_volume", "os-brick-"), ("mine-1", "cinder-"),
         ("ETERNUS-vol", "cinder-")]  # fmt: skip
FILE, LOCKD = "file", "ExternalLock"  # oslo's file lock alone; the file lock and a lockd lock
DEFAULT_KINDS = {
    "cinder-lioadm": FILE,
    "cinder-nvmetcli": FILE,
    "os-brick-connect_volume": FILE,
    "cinder-mine-1": LOCKD,
    "cinder-ETERNUS-vol": LOCKD,
}
ALL_LOCKD = dict.fromkeys(DEFAULT_KINDS, LOCKD)


def probe(tmp_path: Path, patch: str | None, host_local: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKD_", "OSLO_"))}
    if patch is not None:
        env["LOCKD_PATCH_LOCKUTILS"] = patch
    if host_local is not None:
        env["LOCKD_HOST_LOCAL_LOCKS"] = host_local
    return subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(NAMES), str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("host_local", "expected"),
    [
        pytest.param(None, DEFAULT_KINDS, id="unset-defaults"),
        pytest.param("none", ALL_LOCKD, id="none"),
        pytest.param(" NONE ", ALL_LOCKD, id="none-any-case"),
        pytest.param("cinder-mine-*", {**ALL_LOCKD, "cinder-mine-1": FILE}, id="replaces-defaults"),
        pytest.param("default, cinder-mine-*", {**DEFAULT_KINDS, "cinder-mine-1": FILE}, id="extends-defaults"),
        pytest.param("cinder-[lm]i*", {**ALL_LOCKD, "cinder-lioadm": FILE, "cinder-mine-1": FILE}, id="fnmatch"),
        pytest.param("cinder-LIOADM", ALL_LOCKD, id="case-sensitive"),
    ],
)
def test_environment_sets_the_scope_of_the_start_up_hook(
    tmp_path: Path, host_local: str | None, expected: dict[str, str]
) -> None:
    result = probe(tmp_path, "1", host_local)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("host_local", "reason"),
    [("", "is set but empty"), ("cinder-a,,cinder-b", "item 2 is empty"), ("none,cinder-a", "stands alone")],
)
def test_a_bad_scope_is_one_line_on_stderr_and_keeps_no_lock_host_local(
    tmp_path: Path, host_local: str, reason: str
) -> None:
    """A scope mistake may only make locks wider: the patch goes ahead with every external lock on lockd."""
    result = probe(tmp_path, "1", host_local)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ALL_LOCKD
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lockd: LOCKD_HOST_LOCAL_LOCKS") and reason in lines[0], lines[0]
    assert "every external lock is a lockd lock" in lines[0]


def test_the_scope_means_nothing_without_the_patch(tmp_path: Path) -> None:
    result = probe(tmp_path, None, "cinder-mine-*")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == dict.fromkeys(DEFAULT_KINDS, FILE)


# -- the scope from code: patch_lockutils(host_local=...) ----------------------------------------------------------


@pytest.fixture
def patched_here(etcd_url: str, tmp_path: Path, lock_name: str) -> Iterator[Path]:
    """This process patched from code with ``host_local=[...]``; yields the lock_path to use."""
    runtime.configure(backend_url=etcd_url)
    drivers_shim.patch_lockutils(host_local=[f"cinder-{lock_name}-local*"])
    try:
        yield tmp_path
    finally:
        drivers_shim.unpatch_lockutils()
        runtime.stop()
        runtime.configure()


def test_a_thread_of_a_patched_process_and_an_unpatched_process_exclude_each_other(
    patched_here: Path,
    workers: list[ChildProcess],
    coordinator: tooz.coordination.CoordinationDriver,
    lock_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clean_environment(monkeypatch)
    monkeypatch.setenv("OSLO_LOCK_PATH", str(patched_here))  # the workers: plain oslo, no patch, same lock_path
    local, shared = f"{lock_name}-local", f"{lock_name}-shared"
    held, release = threading.Event(), threading.Event()
    kinds: list[bool] = []

    def hold() -> None:
        with lockutils.lock(local, "cinder-", external=True, lock_path=str(patched_here)) as lock:
            kinds.append(type(lock) is lockutils.InterProcessLock)
            held.set()
            release.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert held.wait(30) and kinds == [True]
        assert locker(workers, local, blocking=False).wait_event("refused", "held") == {"event": "refused"}
        assert keys_naming(coordinator.etcd, lock_name) == []

        # ...while in the same process a name outside the scope is a lockd lock.
        with lockutils.lock(shared, "cinder-", external=True, lock_path=str(patched_here)) as lock:
            assert isinstance(lock, lockutils_patch.ExternalLock)
            assert coordinator.etcd.get(keys.lock_key(f"cinder-{shared}")) is not None
        assert coordinator.etcd.get(keys.lock_key(f"cinder-{shared}")) is None
    finally:
        release.set()
        worker.join(30)
    assert locker(workers, local, blocking=False, hold=False).wait_event("refused", "held")["event"] == "held"
    assert sorted(p.name for p in patched_here.iterdir()) == sorted([f"cinder-{local}", f"cinder-{shared}"])


def test_remove_external_lock_file_removes_the_file_in_and_out_of_the_scope(patched_here: Path, lock_name: str) -> None:
    for name in (f"{lock_name}-local", f"{lock_name}-shared"):
        with lockutils.lock(name, "cinder-", external=True, lock_path=str(patched_here)):
            pass
        assert (patched_here / f"cinder-{name}").exists()
        lockutils.remove_external_lock_file_with_prefix("cinder-")(name, lock_path=str(patched_here))
        assert not (patched_here / f"cinder-{name}").exists()  # oslo's own removal, as without the patch


def test_every_external_lock_needs_lock_path_as_oslo_does(patched_here: Path, lock_name: str) -> None:
    assert lockutils.CONF.oslo_concurrency.lock_path is None
    for name in (f"{lock_name}-local", f"{lock_name}-shared"):
        with pytest.raises(cfg.RequiredOptError):
            lockutils.external_lock(name, "cinder-")


def test_patching_again_replaces_the_scope(patched_here: Path, lock_name: str) -> None:
    assert isinstance(
        lockutils.external_lock(f"{lock_name}-local", "cinder-", str(patched_here)), fasteners.InterProcessLock
    )
    drivers_shim.patch_lockutils(host_local=[])
    for name in (f"{lock_name}-local", "nvmetcli"):
        assert isinstance(lockutils.external_lock(name, "cinder-", str(patched_here)), lockutils_patch.ExternalLock)


@pytest.mark.parametrize(
    ("host_local", "message"),
    [
        ("cinder-x", "not one string"),
        ([1], "must be a string"),
        (["cinder-x", None], "must be a string"),
        ([""], "must not be empty"),
        (["  "], "must not be empty"),
        (42, "must be a list of strings"),
    ],
)
def test_bad_patterns_are_a_usage_error_and_patch_nothing(host_local: object, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        drivers_shim.patch_lockutils(host_local=host_local)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert not lockutils_patch.is_patched()


def test_a_bad_environment_is_a_usage_error_from_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKD_HOST_LOCAL_LOCKS", "cinder-a,")
    with pytest.raises(UsageError, match="LOCKD_HOST_LOCAL_LOCKS.*item 2 is empty"):
        drivers_shim.patch_lockutils()
    assert not lockutils_patch.is_patched()


# -- the pattern language, without etcd --------------------------------------------------------------------------


def test_parse_host_local_replaces_extends_or_empties_the_defaults() -> None:
    assert parse_host_local("cinder-a, os-brick-*") == ("cinder-a", "os-brick-*")
    assert parse_host_local("default") == DEFAULT_HOST_LOCAL_LOCKS
    assert parse_host_local("cinder-a,DEFAULT,cinder-a") == ("cinder-a", *DEFAULT_HOST_LOCAL_LOCKS)
    assert parse_host_local("none") == parse_host_local("None") == ()
    assert host_local_from_env({}) == DEFAULT_HOST_LOCAL_LOCKS
    assert host_local_from_env({scope.ENV_VAR: "cinder-a"}) == ("cinder-a",)
    for bad in ("", " ", ",", "a,", ",a", "a,,b", "none,a", "a,none"):
        with pytest.raises(UsageError):
            parse_host_local(bad)


def test_lock_scope_matches_whole_names_case_sensitively() -> None:
    lock_scope = LockScope(DEFAULT_HOST_LOCAL_LOCKS)
    for name in ("cinder-lioadm", "cinder-nvmetcli", "os-brick-connect_volume", "scaleio-scaleio",
                 "os-brick-connect_to_iscsi_portal-10.0.0.1:3260-iqn.x", "cinder-cleanup_incomplete_backups_4242",
                 "cinder-tatlin-connections-store"):  # fmt: skip
        assert lock_scope.is_host_local(name), name
    for name in ("cinder-lioadm-x", "xcinder-lioadm", "cinder-LIOADM", "cinder-ETERNUS-vol", "fcfabric-brcd",
                 "cinder-huawei_qos", "cinder-_var_lib_cinder_mnt_share_img-cache-1", "os-brick", ""):  # fmt: skip
        assert not lock_scope.is_host_local(name), name
    assert not LockScope([]).is_host_local("cinder-lioadm")


def test_covers_every_name_starting_with_is_sure_or_says_no() -> None:
    lock_scope = LockScope(["os-brick-*", "cinder-cleanup_*_x*", "cinder-lioadm"])
    assert lock_scope.covers_every_name_starting_with("os-brick-")
    assert lock_scope.covers_every_name_starting_with("os-brick-connect_to_iscsi_portal-")
    assert lock_scope.covers_every_name_starting_with("cinder-cleanup_a_x")
    assert not lock_scope.covers_every_name_starting_with("os-brick")  # "os-brick" + "x" is not covered
    assert not lock_scope.covers_every_name_starting_with("cinder-cleanup_")  # depends on what follows
    assert not lock_scope.covers_every_name_starting_with("cinder-")  # cinder-lioadm is one name, not all
    assert LockScope(["*"]).covers_every_name_starting_with("")
