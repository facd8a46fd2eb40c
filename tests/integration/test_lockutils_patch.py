"""drivers_shim.patch_lockutils on real etcd: unmodified oslo external-lock code becomes distributed.

"Hosts" are processes with different ``OSLO_LOCK_PATH`` directories: their file locks never meet, which is
exactly the situation of two cinder-volume hosts running active/active today.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tooz.coordination
from oslo_concurrency import lockutils

import drivers_shim
from drivers_shim import lockutils_patch
from lockd import runtime
from tests.etcd_process import queue_entries
from tests.procs import wait_for

# Driver-like code with no lockd in it: a read-sleep-write increment under an oslo external lock.
# The patch, when wanted, comes only from the environment (LOCKD_PATCH_LOCKUTILS=1 and the .pth hook).
DRIVER = r"""
import json, sys, time
from pathlib import Path
from oslo_concurrency import lockutils

cfg = json.loads(sys.argv[1])

@lockutils.synchronized(cfg["name"], "cinder-", external=True, fair=cfg["fair"])
def critical(counter, order, me, hold):
    value = int(counter.read_text() or "0") if counter.exists() else 0
    time.sleep(hold)
    counter.write_text(str(value + 1))
    with order.open("a") as f:
        f.write(me + "\n")

run = Path(cfg["dir"])
(run / ("ready-" + cfg["me"])).touch()
deadline = time.monotonic() + 60
while len(list(run.glob("ready-*"))) < cfg["starters"]:
    if time.monotonic() > deadline:
        sys.exit("start barrier timed out")
    time.sleep(0.01)
for _ in range(cfg["cycles"]):
    critical(run / "counter", run / "order", cfg["me"], cfg["hold"])
print(json.dumps({"external_lock": lockutils.external_lock.__module__}), flush=True)
"""


def host_env(lock_path: Path, backend_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKD_", "OSLO_"))}
    env["OSLO_LOCK_PATH"] = str(lock_path)
    if backend_url is not None:
        env["LOCKD_PATCH_LOCKUTILS"] = "1"
        env["LOCKD_BACKEND_URL"] = backend_url
    return env


def start_driver(run: Path, me: str, name: str, backend_url: str | None, **cfg: object) -> subprocess.Popen[str]:
    lock_path = run / f"host-{me}"
    lock_path.mkdir(exist_ok=True)
    config = {"dir": str(run), "me": me, "name": name, "fair": False, "cycles": 1, "hold": 0.0, "starters": 1}
    config.update(cfg)
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(config)],
        env=host_env(lock_path, backend_url),
        cwd=run,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def run_two_hosts(tmp: Path, name: str, backend_url: str | None, cycles: int) -> tuple[int, list[dict[str, str]]]:
    procs = [start_driver(tmp, me, name, backend_url, cycles=cycles, hold=0.02, starters=2) for me in ("a", "b")]
    reports = [finish(p) for p in procs]
    return int((tmp / "counter").read_text()), reports


def test_two_hosts_lose_updates_with_file_locks_and_none_with_the_patch(
    tmp_path: Path, etcd_url: str, lock_name: str
) -> None:
    cycles = 12
    (tmp_path / "control").mkdir()
    control, reports = run_two_hosts(tmp_path / "control", lock_name, None, cycles)
    assert all(r["external_lock"] == "oslo_concurrency.lockutils" for r in reports)
    # Each host locked its own file: the lock files exist, in two places, and excluded nothing.
    assert (tmp_path / "control" / "host-a" / f"cinder-{lock_name}").exists()
    assert (tmp_path / "control" / "host-b" / f"cinder-{lock_name}").exists()
    # Unexcluded read-yield-write cycles lose updates, or tear a write (two hosts writing at once: once "93")
    assert control != 2 * cycles, "control run did not lose updates: the test cannot tell the patch works"

    (tmp_path / "patched").mkdir()
    patched, reports = run_two_hosts(tmp_path / "patched", lock_name, etcd_url, cycles)
    assert all(r["external_lock"] == "drivers_shim.lockutils_patch" for r in reports)
    assert patched == 2 * cycles
    # The patched lock still takes oslo's file lock, in each host's own lock_path (for the host's unpatched ones).
    assert (tmp_path / "patched" / "host-a" / f"cinder-{lock_name}").exists()
    assert (tmp_path / "patched" / "host-b" / f"cinder-{lock_name}").exists()


def test_fair_external_locks_are_served_in_arrival_order_across_processes(
    tmp_path: Path, etcd_url: str, lock_name: str, coordinator: tooz.coordination.CoordinationDriver
) -> None:
    name = lockutils_patch.lock_name(lock_name, "cinder-")
    holder = coordinator.get_lock(name)
    assert holder.acquire(blocking=False)

    def queued() -> int:
        return len(queue_entries(coordinator.etcd, name))

    procs = []
    try:
        for i, me in enumerate(("first", "second", "third")):
            procs.append(start_driver(tmp_path, me, lock_name, etcd_url, fair=True))
            wait_for(lambda i=i: queued() == i + 1, 30, f"{me} to queue behind the holder")
    finally:
        holder.release()
    for proc in procs:
        finish(proc)
    assert (tmp_path / "order").read_text().split() == ["first", "second", "third"]


@pytest.fixture
def patched(etcd_url: str, tmp_path: Path) -> Iterator[Path]:
    """This process with the patch on, the shim pointed at the test etcd and ``[oslo_concurrency] lock_path`` set
    (as every service that takes external locks has it); yields that lock_path. Everything undone afterwards."""
    lock_path = tmp_path / "lock_path"
    lockutils.CONF.set_override("lock_path", str(lock_path), group="oslo_concurrency")
    runtime.configure(backend_url=etcd_url)
    drivers_shim.patch_lockutils()
    try:
        yield lock_path
    finally:
        drivers_shim.unpatch_lockutils()
        runtime.stop()
        runtime.configure()
        lockutils.CONF.clear_override("lock_path", group="oslo_concurrency")


@pytest.fixture
def other_host(coordinator: tooz.coordination.CoordinationDriver) -> Callable[[str], object]:
    """Take a lockd lock by name from another coordinator (another host, as far as etcd can tell)."""
    taken = []

    def hold(name: str) -> object:
        lock = coordinator.get_lock(name)
        assert lock.acquire(blocking=False), f"{name} was already held"
        taken.append(lock)
        return lock

    yield hold
    for lock in taken:
        if lock.acquired:
            lock.release()


def test_blocking_false_on_a_lock_held_elsewhere_raises_as_oslo_does(
    patched: Path, other_host: Callable[[str], object], lock_name: str
) -> None:
    ran = []

    @lockutils.synchronized(lock_name, "cinder-", external=True, blocking=False)
    def guarded() -> None:
        ran.append(True)

    holder = other_host(f"cinder-{lock_name}")
    with pytest.raises(lockutils.AcquireLockFailedException, match=lock_name):
        guarded()
    with pytest.raises(lockutils.AcquireLockFailedException):
        with lockutils.lock(lock_name, "cinder-", external=True, blocking=False):
            ran.append(True)
    assert ran == []

    holder.release()
    guarded()
    assert ran == [True]


def test_patched_lock_is_held_in_lockd_under_the_prefixed_name(
    patched: Path, coordinator: tooz.coordination.CoordinationDriver, lock_name: str
) -> None:
    synchronized = lockutils.synchronized_with_prefix("cinder")  # Cinder's utils.synchronized, no trailing '-'
    seen = []

    @synchronized(lock_name, external=True)
    def guarded() -> None:
        seen.append(coordinator.get_lock(f"cinder-{lock_name}").acquire(blocking=False))

    guarded()
    assert seen == [False]  # held by us while the function ran
    lock = coordinator.get_lock(f"cinder-{lock_name}")
    assert lock.acquire(blocking=False)  # and released afterwards
    lock.release()


def test_external_lock_object_offers_interprocesslocks_interface(
    patched: Path, other_host: Callable[[str], object], lock_name: str
) -> None:
    lock = lockutils.external_lock(lock_name, "cinder-")
    assert isinstance(lock, lockutils_patch.ExternalLock) and isinstance(lock, lockutils.InterProcessLock)
    assert lock.path == os.fsencode(patched / f"cinder-{lock_name}")  # where (and as) oslo has it unpatched
    with pytest.raises(ValueError):
        lock.acquire(delay=-1)
    with pytest.raises(ValueError):
        lock.acquire(timeout=-1)
    with pytest.raises(threading.ThreadError):
        lock.release()

    holder = other_host(f"cinder-{lock_name}")
    assert lock.acquire(blocking=False) is False
    assert lock.acquire(timeout=0.2) is False
    assert not lock.acquired and not file_held(lock.path), "a failed acquire kept the file lock"
    holder.release()
    assert lock.acquire(delay=0.5) is True
    assert lock.acquired and lock.exists() and file_held(lock.path)
    assert lock.acquire() is True  # re-acquiring a held lock returns at once, as fasteners does
    lock.release()
    assert not lock.acquired and not file_held(lock.path)
    with lockutils.external_lock(lock_name, "cinder-") as again:
        assert again.acquired


def file_held(path: bytes) -> bool:
    """True when oslo's file lock on ``path`` is held, asked from a child: fcntl locks belong to a process, so
    this process would be granted its own lock again."""
    code = "import sys, fasteners; l = fasteners.InterProcessLock(sys.argv[1]); print(l.acquire(blocking=False))"
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip() == "False"


def test_path_like_and_odd_names_map_to_valid_deterministic_lock_names(
    patched: Path, other_host: Callable[[str], object], lock_name: str
) -> None:
    path_name = f"/var/lib/cinder/mnt/{lock_name}/img-cache-1"
    assert lockutils_patch.lock_name(path_name, "cinder-") == f"cinder-_var_lib_cinder_mnt_{lock_name}_img-cache-1"

    long_name = lock_name + "x" * 600
    odd_name = lock_name + "-volum\u00e9\n"
    mapped = {n: lockutils_patch.lock_name(n, "cinder-") for n in (long_name, odd_name)}
    for original, name in mapped.items():
        assert 0 < len(name) <= 512 and all(" " <= ch <= "~" for ch in name)
        assert name.startswith(f"cinder-{lock_name}")
        assert name == lockutils_patch.lock_name(original, "cinder")  # same on every host and every call
    assert len(set(mapped.values())) == 2
    assert lockutils_patch.lock_name(long_name + "y", "cinder-") != mapped[long_name]

    # (A lock file name over 255 bytes cannot be created, with or without the patch: long_name is not taken.)
    for original in (path_name, odd_name):
        holder = other_host(lockutils_patch.lock_name(original, "cinder-"))
        with pytest.raises(lockutils.AcquireLockFailedException):
            with lockutils.lock(original, "cinder-", external=True, blocking=False):
                pass
        holder.release()
        with lockutils.lock(original, "cinder-", external=True, blocking=False):
            pass


def test_internal_locks_and_semaphores_are_untouched(
    patched: Path, other_host: Callable[[str], object], lock_name: str
) -> None:
    other_host(lock_name)
    other_host(f"cinder-{lock_name}")
    ran = []

    @lockutils.synchronized(lock_name, "cinder-", blocking=False)  # internal: the lockd holders do not matter
    def internal() -> None:
        ran.append(True)

    internal()
    with lockutils.lock(lock_name) as sem:
        assert isinstance(sem, threading.Semaphore)
        # ...and still excludes other threads of this process.
        outcome = []
        worker = threading.Thread(target=lambda: outcome.append(_try_internal(lock_name)))
        worker.start()
        worker.join()
        assert outcome == ["refused"]
    own = lockutils.Semaphores()
    with lockutils.lock(lock_name, semaphores=own):
        assert len(own) == 1
    with pytest.raises(NotImplementedError):  # oslo's own rule, unchanged
        with lockutils.lock(lock_name, fair=True, blocking=False):
            pass
    assert ran == [True]


def _try_internal(name: str) -> str:
    try:
        with lockutils.lock(name, blocking=False):
            return "taken"
    except lockutils.AcquireLockFailedException:
        return "refused"


def test_remove_external_lock_file_removes_the_file_as_oslo_documents(
    patched: Path, coordinator: tooz.coordination.CoordinationDriver, lock_name: str
) -> None:
    removals = [
        lambda: lockutils.remove_external_lock_file(lock_name, "cinder-"),
        lambda: lockutils.remove_external_lock_file_with_prefix("cinder-")(lock_name),
    ]
    for remove in removals:
        with lockutils.lock(lock_name, "cinder-", external=True):
            assert (patched / f"cinder-{lock_name}").exists()
        remove()
        assert not (patched / f"cinder-{lock_name}").exists()
        lock = coordinator.get_lock(f"cinder-{lock_name}")  # the lockd part was released, and is not affected
        assert lock.acquire(blocking=False)
        lock.release()


def test_patch_is_idempotent_and_unpatch_restores_file_locks(
    patched: Path, other_host: Callable[[str], object], lock_name: str, tmp_path: Path
) -> None:
    original = lockutils_patch._original
    drivers_shim.patch_lockutils()
    assert lockutils_patch.is_patched()
    drivers_shim.unpatch_lockutils()
    assert not lockutils_patch.is_patched()
    assert lockutils.external_lock is original

    other_host(f"cinder-{lock_name}")  # a lockd holder no longer matters: it is a file lock again
    with lockutils.lock(lock_name, "cinder-", external=True, lock_path=str(tmp_path), blocking=False) as lock:
        assert type(lock) is lockutils.InterProcessLock
    assert (tmp_path / f"cinder-{lock_name}").exists()


def test_a_lock_broken_while_held_is_logged_not_raised(
    patched: Path,
    coordinator: tooz.coordination.CoordinationDriver,
    lock_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="drivers_shim.lockutils_patch"):
        with lockutils.lock(lock_name, "cinder-", external=True):
            assert coordinator.get_lock(f"cinder-{lock_name}").break_()
    assert any(f"cinder-{lock_name}" in r.getMessage() and "no longer held" in r.getMessage() for r in caplog.records)


def test_a_lease_lost_while_held_is_logged_when_it_happens(
    patched: Path, lock_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="drivers_shim.lockutils_patch"):
        with lockutils.lock(lock_name, "cinder-", external=True):
            session = runtime.coordinator().session()
            session.client.lease_revoke(session.lease_id)  # the fault: etcd forgets this process's lease
            wait_for(lambda: any("LOCK LOST" in r.getMessage() for r in caplog.records), 15, "the lease-loss log")
    assert any(f"cinder-{lock_name}" in r.getMessage() for r in caplog.records if "LOCK LOST" in r.getMessage())


def test_patch_works_on_another_tooz_backend_that_cannot_report_loss(tmp_path: Path, lock_name: str) -> None:
    """INTERFACE: other tooz URLs go to tooz's own driver; their locks have no lease-loss signal or token."""
    runtime.configure(backend_url=f"file://{tmp_path}")
    drivers_shim.patch_lockutils()
    try:
        ran = []
        with lockutils.lock(lock_name, "cinder-", external=True, lock_path=str(tmp_path / "lock_path")):
            ran.append(True)
        assert ran == [True]
    finally:
        drivers_shim.unpatch_lockutils()
        runtime.stop()
        runtime.configure()


# -- the start-up hook --------------------------------------------------------------------------------------------

PROBE = "from oslo_concurrency import lockutils; print(lockutils.external_lock.__module__)"


def probe(tmp_path: Path, value: str | None, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKD_")}
    if value is not None:
        env["LOCKD_PATCH_LOCKUTILS"] = value
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "oslo_concurrency.lockutils"),
        ("0", "oslo_concurrency.lockutils"),
        ("1", "drivers_shim.lockutils_patch"),
        ("true", "drivers_shim.lockutils_patch"),
    ],
)
def test_environment_variable_switches_the_patch_on_with_no_code_change(
    tmp_path: Path, value: str | None, expected: str
) -> None:
    result = probe(tmp_path, value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
    assert result.stderr == ""


def test_a_broken_install_never_breaks_interpreter_start(tmp_path: Path) -> None:
    broken = tmp_path / "shadow" / "drivers_shim"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('simulated broken drivers_shim')\n")
    result = probe(tmp_path, "1", pythonpath=str(tmp_path / "shadow"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "oslo_concurrency.lockutils"  # file locks, as without the hook
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "simulated broken drivers_shim" in lines[0], result.stderr


def test_without_a_backend_an_external_lock_fails_clearly_and_does_not_run(tmp_path: Path) -> None:
    code = (
        "from oslo_concurrency import lockutils\n"
        "try:\n"
        "    with lockutils.lock('x', 'cinder-', external=True):\n"
        "        print('ran unlocked')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKD_", "OSLO_"))}
    env.update(LOCKD_PATCH_LOCKUTILS="1", LOCKD_STATE_DIR=str(tmp_path / "no-lockd-serve-here"))
    env.update(OSLO_LOCK_PATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("UsageError no lock backend"), result.stdout
    assert "LOCKD_BACKEND_URL" in result.stdout


def test_a_bad_backend_url_is_said_at_start_up_and_every_lock_fails_with_it(tmp_path: Path) -> None:
    """``LOCKD_BACKEND_URL=bogus://x``: one stderr line when lockutils is imported, then each external lock raises
    a UsageError naming the variable (not stevedore's NoMatches), runs nothing and leaves its file lock free."""
    code = (
        "import json, fasteners\n"
        "from oslo_concurrency import lockutils\n"
        "print(json.dumps({'event': 'imported'}), flush=True)\n"
        "try:\n"
        "    with lockutils.lock('x', 'cinder-', external=True):\n"
        "        print(json.dumps({'event': 'ran unlocked'}))\n"
        "except Exception as exc:\n"
        "    free = fasteners.InterProcessLock(lockutils.external_lock('x', 'cinder-').path).acquire(blocking=False)\n"
        "    print(json.dumps({'event': 'failed', 'type': type(exc).__name__, 'message': str(exc), 'free': free}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKD_", "OSLO_"))}
    env.update(LOCKD_PATCH_LOCKUTILS="1", LOCKD_BACKEND_URL="bogus://x", OSLO_LOCK_PATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockd: LOCKD_BACKEND_URL scheme 'bogus'"), result.stderr
    assert "installed tooz backends: " in lines[0] and "lockd+etcd3+http" in lines[0]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0] == {"event": "imported"}
    assert events[1]["event"] == "failed" and events[1]["type"] == "UsageError", events
    assert events[1]["message"].startswith("LOCKD_BACKEND_URL scheme 'bogus'") and events[1]["free"] is True
