"""drivers_shim.synchronized: Cinder's decorator semantics, without ever running the function unlocked."""

from __future__ import annotations

import threading
import types
from collections.abc import Iterator

import pytest

import drivers_shim
from drivers_shim.synchronized import held_locks
from lockd import runtime
from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url


@pytest.fixture
def shim(etcd_url: str) -> Iterator[None]:
    drivers_shim.configure(backend_url=etcd_url, prefix="cinder-")
    yield
    runtime.stop()
    drivers_shim.configure()


def vol(volume_id: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(id=volume_id)


def test_function_runs_holding_the_rendered_lock(shim, lock_name) -> None:
    seen = {}

    @drivers_shim.synchronized("{volume.id}-delete_volume")
    def delete_volume(volume):
        lock = held_locks.get()[-1]
        seen["name"], seen["token"] = lock.name, lock.token
        return "deleted"

    assert delete_volume(vol(lock_name)) == "deleted"
    assert seen["name"] == f"cinder-{lock_name}-delete_volume".encode()
    assert seen["token"] > 0


def test_held_lock_makes_non_blocking_call_fail_without_running(shim, lock_name) -> None:
    ran = []

    @drivers_shim.synchronized("{volume.id}", blocking=False)
    def attach(volume):
        ran.append(volume.id)

    holder = runtime.coordinator().get_lock(f"cinder-{lock_name}")
    assert holder.acquire()
    try:
        with pytest.raises(drivers_shim.LockAcquireFailed):
            attach(vol(lock_name))
        assert ran == []
    finally:
        holder.release()
    attach(vol(lock_name))
    assert ran == [lock_name]


def test_timeout_that_runs_out_raises_and_does_not_run(shim, lock_name) -> None:
    ran = []

    @drivers_shim.synchronized("{volume.id}", timeout=0.3)
    def extend(volume):
        ran.append(1)

    holder = runtime.coordinator().get_lock(f"cinder-{lock_name}")
    assert holder.acquire()
    try:
        with pytest.raises(drivers_shim.LockAcquireFailed):
            extend(vol(lock_name))
    finally:
        holder.release()
    assert ran == []


def test_several_names_are_all_held_and_released(shim, lock_name) -> None:
    @drivers_shim.synchronized("{a}-x", "{a}-y", "{a}-x")
    def both(a):
        return sorted(lock.name for lock in held_locks.get())

    assert both(lock_name) == [f"cinder-{lock_name}-x".encode(), f"cinder-{lock_name}-y".encode()]
    probe = runtime.coordinator().get_lock(f"cinder-{lock_name}-y")
    assert probe.acquire(blocking=False)
    probe.release()


def test_concurrent_calls_are_serialized(shim, lock_name) -> None:
    inside, overlaps = [0], []

    @drivers_shim.synchronized("{name}")
    def work(name):
        inside[0] += 1
        overlaps.append(inside[0])
        threading.Event().wait(0.005)
        inside[0] -= 1

    threads = [threading.Thread(target=work, args=(lock_name,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert overlaps == [1] * 6


def test_lease_lost_during_the_call_raises_lock_lost_after_it_returns(shim, etcd_url, lock_name) -> None:
    finished = []

    @drivers_shim.synchronized("{name}")
    def long_job(name):
        lock = held_locks.get()[-1]
        EtcdClient(parse_backend_url(etcd_url)).lease_revoke(lock.session.lease_id)
        finished.append(True)

    with pytest.raises(drivers_shim.LockLost):
        long_job(lock_name)
    assert finished == [True]


def test_exception_in_the_function_propagates_and_releases(shim, lock_name) -> None:
    @drivers_shim.synchronized("{name}")
    def boom(name):
        raise RuntimeError("driver failed")

    with pytest.raises(RuntimeError, match="driver failed"):
        boom(lock_name)
    probe = runtime.coordinator().get_lock(f"cinder-{lock_name}")
    assert probe.acquire(blocking=False)
    probe.release()


def test_no_backend_configured_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("LOCKD_BACKEND_URL", raising=False)
    monkeypatch.setenv("LOCKD_STATE_DIR", str(tmp_path))
    drivers_shim.configure()

    @drivers_shim.synchronized("x")
    def f():
        return 1

    with pytest.raises(ValueError, match="no lock backend"):
        f()


def test_each_hold_names_its_template_and_thread(shim, etcd_url, lock_name) -> None:
    """The holder value says which template a lock came from and which thread holds it: the owners and groups of
    the admin API's wait-for graph (lockd.api.waits)."""
    from lockd.etcd import keys
    from lockd.lock import Holder

    seen: dict[str, Holder] = {}

    @drivers_shim.synchronized("{volume.id}-delete_volume", "{f_name}-backend")
    def delete_volume(volume):
        client = EtcdClient(parse_backend_url(etcd_url))
        try:
            for name in (f"cinder-{volume.id}-delete_volume", "cinder-delete_volume-backend"):
                seen[name] = Holder.decode(client.get(keys.lock_key(name)).value)
        finally:
            client.close()

    delete_volume(vol(lock_name))
    assert seen[f"cinder-{lock_name}-delete_volume"].template == "cinder-{volume.id}-delete_volume"
    assert seen["cinder-delete_volume-backend"].template == "cinder-{f_name}-backend"
    assert {holder.thread for holder in seen.values()} == {threading.get_ident()}
