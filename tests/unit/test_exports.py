"""The public names of lockd and drivers_shim are pinned (INTERFACE.md): removing one breaks users."""

from __future__ import annotations

import importlib.metadata

import tooz.coordination

import drivers_shim
import lockd


def test_lockd_exports() -> None:
    assert set(lockd.__all__) >= {"LockAcquireFailed", "LockLost", "TransitionConflict", "UsageError", "BackendError"}
    for name in lockd.__all__:
        assert getattr(lockd, name)


def test_shim_exports() -> None:
    for name in ("configure", "synchronized", "LockAcquireFailed", "LockLost", "TransitionConflict"):
        assert name in drivers_shim.__all__ and getattr(drivers_shim, name)


def test_shim_acquire_failure_is_tooz_lock_acquire_failed() -> None:
    assert issubclass(drivers_shim.LockAcquireFailed, tooz.coordination.LockAcquireFailed)


def test_tooz_backend_entry_points_are_registered() -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group="tooz.backends")}
    assert {"lockd+etcd3+http", "lockd+etcd3+https"} <= names
