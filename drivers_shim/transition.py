"""``@transition``: move a resource's status expected -> pending -> success | failure around a call, atomically.

The first step is one compare-and-set (lockd.status), so of two simultaneous calls only one runs the body;
the other gets TransitionConflict with the status it found, and its body never runs.

Fencing rule inside ``@synchronized``: the writes are fenced with the *innermost* held lockd lock whose name
contains the rendered resource id (Cinder's ``"{volume.id}-delete_volume"`` names contain the volume id).
Locks that do not name the resource are not used: their tokens say nothing about this resource, and a token
from an unrelated lock would fence out legitimate writers. With no such lock the writes are unfenced.
Put ``@synchronized`` outside (above) ``@transition`` so the lock is held when the status moves.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from drivers_shim.names import call_arguments, render
from drivers_shim.synchronized import held_locks
from lockd import status
from lockd.errors import LockdError, TransitionConflict, UsageError
from lockd.status.model import check_expected, check_resource, check_status

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def fence_for(resource_id: str) -> Any:
    """The innermost held lockd lock (one with ``.token`` and ``.key``) whose name contains ``resource_id``."""
    for lock in reversed(held_locks.get()):
        name = lock.name.decode("ascii", "replace") if isinstance(lock.name, bytes) else str(lock.name)
        if resource_id in name and hasattr(lock, "token") and hasattr(lock, "key"):
            return lock
    return None


def _refused(kind: str, resource_id: str, result: status.Result, wanted: str) -> TransitionConflict:
    why = {
        status.CONFLICT: f"is {result.current!r}, not {wanted}",
        status.FENCED: "was written by a newer lock holder (higher fencing token)",
        status.NOT_OWNER: "cannot be written: the fencing lock is no longer held",
        status.EPOCH: "was fenced by another lifetime of the etcd cluster (see `lockd epoch adopt`)",
    }.get(result.reason or "", f"refused ({result.reason})")
    return TransitionConflict(f"{kind} {resource_id} {why}", current=result.current, reason=result.reason)


def transition(
    kind: str, id: str, expected: Collection[str | None], pending: str, success: str, failure: str
) -> Callable[[F], F]:
    """Decorate a function so it runs only after ``kind``/``id`` moved from ``expected`` to ``pending``.

    ``id`` is a template rendered like synchronized's names (``"{volume.id}"``). After the function returns
    the status becomes ``success``; if it raises, ``failure`` and the exception propagates.

    Raises (from the decorated call):
        TransitionConflict: the status was not in ``expected`` (``.current``), or the fenced write was refused
            (``.reason``); the function did not run. Also raised after a successful call if the status was
            changed by someone else meanwhile, so ``success`` could not be recorded.
        UsageError: at decoration, bad statuses; at call time, an id template that does not render.
    """
    check_resource(kind, "template")
    if not isinstance(id, str) or not id:
        raise UsageError("id must be a non-empty template string such as '{volume.id}'")
    wanted = check_expected(expected)
    for what, value in (("pending", pending), ("success", success), ("failure", failure)):
        check_status(value, what)
    wanted_text = " or ".join(repr(s) for s in sorted(wanted, key=str))

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            resource_id = render(id, call_arguments(func, args, kwargs), "resource id")
            fence = fence_for(resource_id)
            begun = status.compare_and_set(kind, resource_id, wanted, pending, fence=fence)
            if not begun.ok:
                raise _refused(kind, resource_id, begun, wanted_text)
            try:
                value = func(*args, **kwargs)
            except BaseException:
                # The caller must see the body's exception, not a failure to record it.
                try:
                    ended = status.compare_and_set(kind, resource_id, [pending], failure, fence=fence)
                    if not ended.ok:
                        LOG.error("%s %s: could not record %r after a failure: %s", kind, resource_id, failure, ended)
                except LockdError as exc:
                    LOG.error("%s %s: could not record %r after a failure: %s", kind, resource_id, failure, exc)
                raise
            ended = status.compare_and_set(kind, resource_id, [pending], success, fence=fence)
            if not ended.ok:
                raise _refused(kind, resource_id, ended, repr(pending))
            return value

        return wrapper  # type: ignore[return-value]

    return decorator
