"""``@synchronized``: cinder.coordination.synchronized on lockd, minus its defect of running unlocked.

Cinder ignores the result of ``lock.acquire(blocking)``; here a lock that was not taken raises
LockAcquireFailed and the function does not run. A lock that stopped being ours while the function ran
raises LockLost after it returns, because its work was not protected.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from drivers_shim.names import call_arguments, render_names
from lockd import runtime
from lockd.errors import BackendError, LockAcquireFailed, LockLost
from lockd.lock import TEMPLATE

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Locks held by the current synchronized block(s), innermost last; transition() fences with them.
held_locks: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar("lockd_held_locks", default=())


def _wait_for(blocking: bool, timeout: float | None, deadline: float | None) -> bool | float:
    if not blocking:
        return False
    if deadline is None:
        return True
    return max(0.0, deadline - time.monotonic())


@contextlib.contextmanager
def locked(
    names: list[str],
    blocking: bool = True,
    timeout: float | None = None,
    templates: Mapping[str, str] | None = None,
) -> Iterator[list[Any]]:
    """Hold every lock in ``names`` (already prefixed and sorted) for the block. ``templates``: the template each
    name came from, recorded with the hold (lockd.lock.TEMPLATE) so the admin API can group by template.

    Raises:
        LockAcquireFailed: a lock could not be taken within ``timeout`` (or at once when not blocking);
            locks taken so far are released and the block does not run.
        LockLost: after the block, if a lock stopped being ours while it ran.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    taken: list[Any] = []
    try:
        for name in names:
            lock = runtime.get_lock(name)
            named = TEMPLATE.set((templates or {}).get(name))
            try:
                ok = lock.acquire(_wait_for(blocking, timeout, deadline))
            except BackendError as exc:
                raise LockAcquireFailed(f"could not acquire lock {name!r}: {exc}", name) from exc
            finally:
                TEMPLATE.reset(named)
            if not ok:
                raise LockAcquireFailed(f"could not acquire lock {name!r} (held elsewhere)", name)
            taken.append(lock)
    except BaseException:
        _release_all(taken)
        raise
    reset = held_locks.set(held_locks.get() + tuple(taken))
    failed = True
    try:
        yield taken
        failed = False
    finally:
        held_locks.reset(reset)
        lost = _release_all(taken)
        if lost and not failed:
            raise LockLost(f"lock {lost[0]!r} was lost while held; the guarded work was not protected", lost[0])
        if lost:
            LOG.error("lock(s) %s were lost while held (the block also raised)", ", ".join(lost))


def _release_all(locks: list[Any]) -> list[str]:
    """Release in reverse order; returns the names that were no longer ours."""
    lost = []
    for lock in reversed(locks):
        name = lock.name.decode() if isinstance(lock.name, bytes) else lock.name
        try:
            if not lock.release():
                lost.append(name)
        except BackendError as exc:
            # Not lost: the session deletes the key as soon as etcd answers again.
            LOG.warning("release of %r deferred: %s", name, exc)
    return lost


def synchronized(*templates: str, blocking: bool = True, timeout: float | None = None) -> Callable[[F], F]:
    """Run the function holding the locks its templates name (Cinder's syntax, ``cinder-`` prefix by default).

    ``"{volume.id}-delete_volume"`` is ``str.format`` over the call's arguments plus ``f_name``; several
    names are sorted and de-duplicated so every caller takes them in the same order.
    """

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            prefix, values = runtime.settings().prefix, call_arguments(func, args, kwargs)
            names = render_names(templates, values, prefix)
            origin = {render_names([template], values, prefix)[0]: prefix + template for template in templates}
            with locked(names, blocking, timeout, origin):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
