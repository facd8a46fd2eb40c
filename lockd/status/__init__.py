"""Atomic, optionally fenced status transitions of resources (volumes, snapshots, ...).

Closes Cinder's API test-and-set race: checking a status and then updating it in a separate step lets two
requests both pass the check. Here the check and the write are one atomic step in the store.

``get``, ``compare_and_set`` and ``history`` use the store the shim is configured for
(``lockd.runtime``: ``drivers_shim.configure(status_url=...)`` / ``$LOCKD_STATUS_URL``; unset = etcd next to
the locks).
``open_store(url)`` gives a store explicitly (the admin API uses it). Stores: lockd.status.etcd_store,
lockd.status.sql_store.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from lockd import runtime
from lockd.status.model import CONFLICT, EPOCH, FENCED, HISTORY_KEEP, NOT_OWNER, Result, StatusStore
from lockd.status.store import default_store, open_store

__all__ = [
    "CONFLICT",
    "EPOCH",
    "FENCED",
    "HISTORY_KEEP",
    "NOT_OWNER",
    "Result",
    "StatusStore",
    "compare_and_set",
    "get",
    "history",
    "open_store",
]


def _who() -> str:
    return runtime.member_id()


def get(kind: str, id: str) -> str | None:
    """The resource's status, None if it has none. Raises UsageError on bad input, BackendError on failure."""
    record = default_store().get_record(kind, id)
    return None if record is None else record[0]


def compare_and_set(kind: str, id: str, expected: Collection[str | None], new: str, fence: Any = None) -> Result:
    """Atomically set ``new`` if the status is in ``expected`` (None in it = absent, so ``[None]`` creates).

    ``fence``: a held lockd lock, or its integer token. A fenced write is refused (``reason`` FENCED) once a
    write with a higher token landed on this resource, and, given the lock, (NOT_OWNER) when that lock is
    no longer held with that token, checked in the same atomic step (etcd) or right before it (SQL, where the
    token check is the atomic part).

    Returns a Result: ``ok``; ``current`` (the new status when ok, else what blocked the write); ``revision``.
    Raises:
        UsageError: empty or non-string kind/id/status, a bare string as ``expected``, values over 255
            characters, a bad fence; nothing was written.
        BackendError: the store failed; whether the write landed is unknown, so read it back.
    """
    return default_store().compare_and_set(kind, id, expected, new, fence=fence, who=_who())


def history(kind: str, id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The resource's last transitions, newest first: dicts with who, at (Unix time), from, to, token."""
    return default_store().history(kind, id, limit)
