"""What every status store shares: the Result shape, the store protocol, fences, and input validation.

Validation runs before any store is touched, so bad input raises :class:`lockd.errors.UsageError` with
nothing written. A *fence* is what a caller proves it holds: an integer fencing token, or a held lockd lock
(its ``.token`` plus the etcd key whose mod_revision must still equal that token).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Collection
from typing import Any, Protocol, runtime_checkable

from lockd.errors import UsageError

#: Longest kind, id or status accepted (Cinder's status columns are String(255)).
MAX_FIELD_LENGTH = 255
#: Most statuses one ``expected`` may list (Cinder's largest set has five).
MAX_EXPECTED = 64
#: Transitions kept per resource; ``history(limit=...)`` never returns more.
HISTORY_KEEP = 20

# Why a write was refused (Result.reason).
CONFLICT = "conflict"  # the current status is not in expected
FENCED = "fenced"  # a write with a higher fencing token already landed
NOT_OWNER = "not_owner"  # the fencing lock is no longer held with that token
EPOCH = "epoch"  # the token comes from another lifetime of the etcd cluster than the store's record (lockd.epoch)


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of one compare-and-set.

    ``ok``: the new status was written. ``current``: the status now (the new one when ok; what blocked the
    write otherwise; None = absent). ``revision``: the store's revision of the record after the call (0 when
    absent). ``reason``: None when ok, else CONFLICT, FENCED or NOT_OWNER.
    """

    ok: bool
    current: str | None
    revision: int
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class Fence:
    """A normalised fence: the token, and when a lock object was given, the lock, its etcd key and the epoch
    (lockd.epoch) of the cluster that issued the token. A bare integer token carries no epoch."""

    token: int
    lock: Any = None
    key: bytes | None = None
    epoch: str | None = None


@runtime_checkable
class StatusStore(Protocol):
    """One place statuses live (etcd or SQL). Methods take validated or raw input; both validate."""

    def get_record(self, kind: str, id: str) -> tuple[str, int] | None: ...

    def compare_and_set(
        self,
        kind: str,
        id: str,
        expected: Collection[str | None],
        new: str,
        fence: Any = None,
        who: str | None = None,
    ) -> Result: ...

    def history(self, kind: str, id: str, limit: int = HISTORY_KEEP) -> list[dict[str, Any]]: ...

    def adopt_epoch(self, epoch: str, kind: str | None = None, id: str | None = None, who: str | None = None) -> int:
        """Accept tokens of ``epoch`` (lockd.epoch) for resources fenced under another; returns how many."""
        ...

    def close(self) -> None: ...


def default_who() -> str:
    """Who a history entry names when the caller does not say: host and pid of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _text(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise UsageError(f"{what} must not be empty")
    if len(value) > MAX_FIELD_LENGTH:
        raise UsageError(f"{what} is {len(value)} characters; at most {MAX_FIELD_LENGTH} are allowed")
    if not value.isprintable():
        raise UsageError(f"{what} {value[:60]!r} must be printable text")
    return value


def check_resource(kind: object, id: object) -> tuple[str, str]:
    """Raises UsageError unless kind and id are non-empty printable strings of at most 255 characters."""
    return _text("kind", kind), _text("id", id)


def check_status(value: object, what: str = "status") -> str:
    return _text(what, value)


def check_expected(expected: object) -> frozenset[str | None]:
    """``expected`` as a set; None inside it stands for "absent".

    A bare string is refused: ``"available"`` would otherwise be read as its letters.
    """
    if isinstance(expected, (str, bytes)) or not isinstance(expected, Collection):
        raise UsageError(f"expected must be a collection of statuses such as a list, not {type(expected).__name__}")
    if not expected:
        raise UsageError("expected must name at least one status (None matches an absent resource)")
    if len(expected) > MAX_EXPECTED:
        raise UsageError(f"expected lists {len(expected)} statuses; at most {MAX_EXPECTED} are allowed")
    return frozenset(None if s is None else check_status(s, "expected status") for s in expected)


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise UsageError(f"limit must be a non-negative integer, not {limit!r}")
    return min(limit, HISTORY_KEEP)


def check_who(who: object) -> str:
    return default_who() if who is None else _text("who", who)


def fence_refusal(fence: Fence, recorded_epoch: str | None, highest: int) -> str | None:
    """Why a store refuses this fence, given what it recorded for the resource (None: it does not).

    EPOCH for a token of another cluster lifetime than the recorded one (never compared: lockd.epoch), FENCED
    for a token below the highest one written. A fence without an epoch (a bare integer) is only compared."""
    if fence.epoch and recorded_epoch and fence.epoch != recorded_epoch:
        return EPOCH
    if fence.token < highest:
        return FENCED
    return None


def still_owner(fence: Fence) -> bool:
    """Ask a fencing lock object whether it still holds its lock (one etcd read); True for a bare token."""
    check = getattr(fence.lock, "is_still_owner", None)
    return bool(check()) if callable(check) else True


def check_fence(fence: object) -> Fence | None:
    """Normalise ``fence``: None, a positive int token, or a lock object with ``.token`` (and ``.key``).

    A lock object that is not held (``token`` None) still yields a Fence with token 0, so the store refuses
    the write as NOT_OWNER instead of writing unfenced.
    """
    if fence is None:
        return None
    if isinstance(fence, bool):
        raise UsageError("fence must be a held lock or an integer token, not a bool")
    if isinstance(fence, int):
        if fence <= 0:
            raise UsageError(f"fence token must be a positive integer, not {fence}")
        return Fence(fence)
    if not hasattr(fence, "token"):
        raise UsageError(f"fence must be a held lockd lock or an integer token, not {type(fence).__name__}")
    token = fence.token
    key = getattr(fence, "key", None)
    if token is not None and (isinstance(token, bool) or not isinstance(token, int)):
        raise UsageError(f"fence lock has a non-integer token {token!r}")
    if key is not None and not isinstance(key, bytes):
        key = None
    epoch = getattr(fence, "epoch", None)
    return Fence(token or 0, lock=fence, key=key, epoch=epoch if isinstance(epoch, str) and epoch else None)


def history_entry(who: str, at: float, old: str | None, new: str, token: int | None) -> dict[str, Any]:
    """One history record, the same shape in every store (``at`` is Unix time, ``token`` None if unfenced)."""
    return {"who": who, "at": at, "from": old, "to": new, "token": token}
