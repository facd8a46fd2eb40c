"""Stock Cinder's coordination path on lockd: ``[coordination] backend_url = lockd+etcd3+http://...``.

cinder/coordination.py only uses tooz's public API: ``get_coordinator(backend_url, member_id)`` with bytes
ids, ``start(start_heart=True)``, ``get_lock((prefix + name).encode('ascii'))``, ``with lock(blocking):``
(raising tooz's LockAcquireFailed when not taken) and ``stop()``. These tests make exactly those calls.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tooz.coordination

from lockd.tooz_driver import LockdDriver

# A cinder-volume host in miniature: its own coordinator, Cinder's calls, a read-sleep-write under the lock.
HOST = r"""
import json, sys, time, uuid
from pathlib import Path
from tooz import coordination

cfg = json.loads(sys.argv[1])
run = Path(cfg["dir"])
coordinator = coordination.get_coordinator(cfg["url"], ("cinder-" + uuid.uuid4().hex).encode("ascii"))
coordinator.start(start_heart=True)
lock = coordinator.get_lock(("cinder-" + cfg["name"]).encode("ascii"))
(run / ("ready-" + cfg["me"])).touch()
deadline = time.monotonic() + 60
while len(list(run.glob("ready-*"))) < 2:
    if time.monotonic() > deadline:
        sys.exit("start barrier timed out")
    time.sleep(0.01)
refused = 0
for _ in range(cfg["cycles"]):
    try:
        with lock(False):  # cinder.coordination.synchronized(..., blocking=False)
            pass
    except coordination.LockAcquireFailed:
        refused += 1
    with lock(True):
        counter = run / "counter"
        value = int(counter.read_text() or "0") if counter.exists() else 0
        time.sleep(cfg["hold"])
        counter.write_text(str(value + 1))
coordinator.stop()
print(json.dumps({"refused": refused}), flush=True)
"""


def cinder_coordinator(url: str) -> tooz.coordination.CoordinationDriver:
    coordinator = tooz.coordination.get_coordinator(url, f"cinder-{uuid.uuid4()}".encode("ascii"))
    coordinator.start(start_heart=True)
    return coordinator


@pytest.fixture
def cinder_pair(etcd_url: str) -> Iterator[Callable[[], tooz.coordination.CoordinationDriver]]:
    made: list[tooz.coordination.CoordinationDriver] = []

    def make() -> tooz.coordination.CoordinationDriver:
        made.append(cinder_coordinator(etcd_url))
        return made[-1]

    yield make
    for coordinator in made:
        if coordinator.is_started:
            coordinator.stop()


def test_backend_url_selects_the_lockd_driver_through_tooz(cinder_pair: Callable[[], object]) -> None:
    assert isinstance(cinder_pair(), LockdDriver)


def test_cinder_lock_round_trip_acquire_release_and_context_manager(
    cinder_pair: Callable[[], tooz.coordination.CoordinationDriver], lock_name: str
) -> None:
    first, second = cinder_pair(), cinder_pair()
    name = f"cinder-{lock_name}-delete_volume".encode("ascii")
    mine, theirs = first.get_lock(name), second.get_lock(name)

    assert mine.acquire(blocking=True)
    assert theirs.acquire(blocking=False) is False
    with pytest.raises(tooz.coordination.LockAcquireFailed):
        with theirs(False):
            pass
    assert mine.release()
    assert theirs.acquire(blocking=False)
    assert theirs.release()

    with mine(True):
        assert mine.acquired
        assert theirs.acquire(blocking=0.2) is False
    assert not mine.acquired
    with theirs(True):
        assert theirs.acquired


def test_stop_releases_held_cinder_locks_at_once(
    cinder_pair: Callable[[], tooz.coordination.CoordinationDriver], lock_name: str
) -> None:
    first, second = cinder_pair(), cinder_pair()
    name = f"cinder-{lock_name}".encode("ascii")
    assert first.get_lock(name).acquire()
    first.stop()  # stock tooz's etcd3gw driver would leave the key until its lease TTL ran out
    assert second.get_lock(name).acquire(blocking=False)


def test_two_cinder_hosts_contending_lose_no_updates(tmp_path: Path, etcd_url: str, lock_name: str) -> None:
    cycles = 10
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                HOST,
                json.dumps(
                    {"dir": str(tmp_path), "me": me, "url": etcd_url, "name": lock_name, "cycles": cycles, "hold": 0.02}
                ),
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in ("host-a", "host-b")
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert int((tmp_path / "counter").read_text()) == 2 * cycles
    # The non-blocking tries met the other host's lock at least once: the two really contended.
    assert sum(r["refused"] for r in reports) > 0


def test_wait_on_a_cinder_lock_ends_when_the_holder_releases(
    cinder_pair: Callable[[], tooz.coordination.CoordinationDriver], lock_name: str
) -> None:
    first, second = cinder_pair(), cinder_pair()
    name = f"cinder-{lock_name}".encode("ascii")
    holder = first.get_lock(name)
    assert holder.acquire()
    got = threading.Event()
    waiter = second.get_lock(name)

    def wait() -> None:
        if waiter.acquire(blocking=True):
            got.set()

    thread = threading.Thread(target=wait)
    thread.start()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline and not got.is_set():
        time.sleep(0.01)
    assert not got.is_set()  # excluded while held
    holder.release()
    thread.join(timeout=30)
    assert got.is_set()
    waiter.release()
