"""Statuses in etcd, next to the locks: one key per resource, changed only by a compare-and-swap txn.

Theory of operation
-------------------
Key: ``/lockd/status/<kind>/<id>`` (lockd.etcd.keys.status_key, both parts percent-quoted). Value: JSON
``{"status": S, "fence": T, "epoch": E, "history": [...], "write": W}`` where ``fence`` is the highest fencing
token any write to this resource carried, ``epoch`` the lifetime of the lock cluster it came from
(lockd.epoch), ``history`` the last HISTORY_KEEP transitions (so one put changes all of them at once) and
``write`` a random id of the compare_and_set call that wrote it.

compare_and_set:
  1. Read the key (value + mod_revision). If its status is not in ``expected``, answer CONFLICT; if the
     caller's token comes from another epoch than ``epoch``, answer EPOCH (``adopt_epoch`` is the way
     through); if it is below ``fence``, answer FENCED. No write happens.
  2. One txn: compare the key's mod_revision with what we read (0 = still absent) and, for a lock object of
     this very cluster (its epoch is the cluster's), compare the lock key's mod_revision with the lock's
     token (the lock is still held by that acquisition); then put the new value. A lock of another cluster
     (statuses kept apart from the locks) is asked ``is_still_owner()`` before, as the SQL store does. On
     failure the same txn returns the key (and the lock key), so a lost race costs no extra read: a
     NOT_OWNER answer, or back to the checks of step 1 with fresh data.
  A loser of a race: two round trips, since the winner's status is no longer in ``expected``; only a race
  among writes that all leave the status inside ``expected`` retries.

Our own write, answered late: the client repeats a txn on another member when an answer is lost, and the
repeat then fails its compare against the write the first send made. The failed txn returns the key, and
a record whose ``write`` is this call's id is that earlier success. Nothing else may count as "ours": two
callers of one process can build byte-identical records (same who, same millisecond, same from and to),
and taking equal bytes as proof once let 3 of 8 racing threads all win.

Read cache: the store remembers the last value and mod_revision it read or wrote per key (bounded), with the
record decoded and its history entries encoded, so a transition on a remembered key parses nothing and encodes
only its own entry (a record carries HISTORY_KEEP entries: its JSON was a tenth of a transition's client time).
When the remembered status is in ``expected`` and the fence passes, step 1's read is skipped: the txn's
mod_revision compare proves the guess right, and a wrong guess costs nothing extra because the failed txn
returns the fresh key. Refusals are only ever answered from fresh data. So a process moving its own resources
pays one round trip per transition.

The txn only *compares* the lock key: nothing is ever written under ``/tooz/locks``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Collection
from typing import Any

from lockd import epoch
from lockd.errors import BackendError
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, KeyValue, cmp_mod, op_put, op_range
from lockd.status.model import (
    CONFLICT,
    HISTORY_KEEP,
    NOT_OWNER,
    Fence,
    Result,
    check_expected,
    check_fence,
    check_limit,
    check_resource,
    check_status,
    check_who,
    fence_refusal,
    history_entry,
    still_owner,
)

#: A race that keeps leaving the status inside ``expected`` is retried at most this often.
MAX_ATTEMPTS = 64
#: Keys whose last seen value the store remembers (see "Read cache").
CACHE_SIZE = 4096


class _Seen:
    """A remembered key: its record decoded once (``bad``: not lockd's JSON) and its history entries as JSON."""

    __slots__ = ("kv", "record", "bad", "_entries")

    def __init__(self, kv: KeyValue | None, record: dict[str, Any] | None = None, entries: list[str] | None = None):
        self.kv, self.bad, self._entries = kv, False, entries
        if record is None and kv is not None:
            try:
                record = _decode(kv)
            except BackendError:
                self.bad = True
        self.record = record

    def entries(self) -> list[str]:
        """The record's history, each entry as the JSON text it is written with."""
        if self._entries is None:
            history = (self.record or {}).get("history") or []
            self._entries = [json.dumps(entry, separators=(",", ":")) for entry in history]
        return self._entries


def _encode(status: str, fence: int | None, epoch_: str | None, entries: list[str], write: str) -> bytes:
    """The record's JSON, as json.dumps would write it (same keys, same order), from history entries already
    encoded."""
    head = json.dumps({"status": status, "fence": fence, "epoch": epoch_}, separators=(",", ":"))
    return f'{head[:-1]},"history":[{",".join(entries)}],"write":{json.dumps(write)}}}'.encode()


def _decode(kv: KeyValue | None) -> dict[str, Any] | None:
    if kv is None:
        return None
    try:
        record = json.loads(kv.value)
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("status"), str):
        raise BackendError(f"status record {kv.key!r} is not lockd's JSON; refusing to overwrite it")
    return record


def _write_id(kv: KeyValue) -> str | None:
    """The id of the compare_and_set call that wrote ``kv`` (None for records older than that field)."""
    try:
        record = _decode(kv)
    except BackendError:
        return None
    return None if record is None else record.get("write")


def _status_of(kv: KeyValue | None) -> str | None:
    record = _decode(kv)
    return None if record is None else record["status"]


class EtcdStatusStore:
    """The default status store. ``owns_client``: close() also closes the client (else the caller's)."""

    def __init__(self, client: EtcdClient, owns_client: bool = False) -> None:
        self.client = client
        self._owns_client = owns_client
        self._known: dict[bytes, _Seen] = {}
        self._known_lock = threading.Lock()
        self._epoch: str | None = None  # this cluster's lockd epoch, once read
        self._foreign: set[str] = set()  # epochs seen not to be this cluster's (locks kept elsewhere)

    def _local(self, fence: Fence) -> bool:
        """Was the fence's lock taken on this cluster (so its key can be compared in our txn)?"""
        if fence.key is None or fence.epoch in self._foreign:
            return False
        if fence.epoch is None or fence.epoch == self._epoch:
            return True
        self._epoch = (epoch.current(self.client) or {}).get("epoch")  # first use, or the epoch was rotated
        if fence.epoch != self._epoch:
            self._foreign.add(fence.epoch)  # epochs are random ids: another cluster's never becomes ours
        return fence.epoch == self._epoch

    def _remember(self, key: bytes, seen: _Seen) -> _Seen:
        with self._known_lock:
            self._known.pop(key, None)
            if len(self._known) >= CACHE_SIZE:
                del self._known[next(iter(self._known))]
            self._known[key] = seen
        return seen

    def _fetch(self, key: bytes) -> _Seen:
        """The key read from etcd now, remembered."""
        return self._remember(key, _Seen(self.client.get(key)))

    def _read(self, key: bytes) -> KeyValue | None:
        return self._fetch(key).kv

    def _guess(self, key: bytes, wanted: frozenset[str | None], fence: Fence | None) -> _Seen | None:
        """The remembered key if it would pass the checks (so a txn is worth trying on it), else None."""
        seen = self._known.get(key)
        if seen is None or seen.bad:
            return None
        record = seen.record
        if (None if record is None else record["status"]) not in wanted:
            return None
        if fence is not None and fence_refusal(fence, (record or {}).get("epoch"), (record or {}).get("fence") or 0):
            return None
        return seen

    def get_record(self, kind: str, id: str) -> tuple[str, int] | None:
        """(status, mod_revision) of the resource, None if it has no status."""
        kv = self._read(keys.status_key(*check_resource(kind, id)))
        status = _status_of(kv)
        return None if kv is None or status is None else (status, kv.mod_revision)

    def history(self, kind: str, id: str, limit: int = HISTORY_KEEP) -> list[dict[str, Any]]:
        """The last ``limit`` transitions (at most HISTORY_KEEP), newest first."""
        limit = check_limit(limit)
        record = _decode(self._read(keys.status_key(*check_resource(kind, id))))
        entries = [] if record is None else list(record.get("history", []))
        return entries[::-1][:limit]

    def compare_and_set(
        self,
        kind: str,
        id: str,
        expected: Collection[str | None],
        new: str,
        fence: Any = None,
        who: str | None = None,
    ) -> Result:
        """Set ``new`` if the status is in ``expected`` (and the fence holds), atomically; see the module doc.

        Raises:
            UsageError: bad input; nothing was written.
            BackendError: etcd failed; the write may or may not have landed (read it back to know).
        """
        key = keys.status_key(*check_resource(kind, id))
        wanted = check_expected(expected)
        new = check_status(new, "new status")
        fenced = check_fence(fence)
        who = check_who(who)
        if fenced is not None and (fenced.token == 0 or not (self._local(fenced) or still_owner(fenced))):
            kv = self._read(key)
            return Result(False, _status_of(kv), kv.mod_revision if kv else 0, NOT_OWNER)
        seen = self._guess(key, wanted, fenced) or self._fetch(key)
        write_id = uuid.uuid4().hex
        for _ in range(MAX_ATTEMPTS):
            answer = self._attempt(key, seen, wanted, new, fenced, who, write_id)
            if isinstance(answer, Result):
                return answer
            seen = answer
        raise BackendError(f"status of {kind}/{id} kept changing within {sorted(map(str, wanted))}; gave up")

    def _attempt(
        self,
        key: bytes,
        seen: _Seen,
        wanted: frozenset[str | None],
        new: str,
        fence: Fence | None,
        who: str,
        write_id: str,
    ) -> Result | _Seen:
        """One check-and-txn step: a final Result, or the fresh key to try again with.

        ``write_id`` is the calling compare_and_set's own id, the same for all its attempts: only one of
        them can land, since each compares the mod_revision the previous one saw fail.
        """
        kv, record = seen.kv, seen.record
        if seen.bad:
            _decode(kv)  # raises: not lockd's record, never overwritten
        current = None if record is None else record["status"]
        revision = kv.mod_revision if kv is not None else 0
        if current not in wanted:
            return Result(False, current, revision, CONFLICT)
        recorded = record or {}
        refusal = fence_refusal(fence, recorded.get("epoch"), recorded.get("fence") or 0) if fence is not None else None
        if refusal:
            return Result(False, current, revision, refusal)
        entry = history_entry(who, round(time.time(), 3), current, new, fence.token if fence else None)
        history = [*recorded.get("history", []), entry][-HISTORY_KEEP:]
        entries = [*seen.entries(), json.dumps(entry, separators=(",", ":"))][-HISTORY_KEEP:]
        token = max(recorded.get("fence") or 0, fence.token if fence else 0) or None
        epoch_ = (fence.epoch if fence is not None else None) or recorded.get("epoch")
        record = {"status": new, "fence": token, "epoch": epoch_, "history": history, "write": write_id}
        value = _encode(new, token, epoch_, entries, write_id)
        compare = [cmp_mod(key, revision)]
        failure = [op_range(key)]
        local = fence is not None and self._local(fence)
        if local:
            compare.append(cmp_mod(fence.key, fence.token))
            failure.append(op_range(fence.key, keys_only=True))
        result = self.client.txn(compare, [op_put(key, value)], failure)
        if result.succeeded:
            self._remember(key, _Seen(KeyValue(key, value, 0, result.revision, 0, 0), record, entries))
            return Result(True, new, result.revision)
        again = self._remember(key, _Seen((result.kvs(0) or [None])[0]))
        fresh = again.kv
        if result.repeated and fresh is not None and _write_id(fresh) == write_id:
            # Our own write: the client repeated the txn on another member after losing the first answer.
            return Result(True, new, fresh.mod_revision)
        if local:
            lock = (result.kvs(1) or [None])[0]
            if lock is None or lock.mod_revision != fence.token:
                return Result(False, _status_of(fresh), fresh.mod_revision if fresh else 0, NOT_OWNER)
        return again

    def adopt_epoch(self, epoch_: str, kind: str | None = None, id: str | None = None, who: str | None = None) -> int:
        """Accept tokens of ``epoch_`` from now on for every resource (or one kind, or one resource) whose fence
        came from another epoch; see SqlStatusStore.adopt_epoch. Each change is kept under
        ``/lockd/epoch-adoptions/``. Returns how many resources changed."""
        epoch_ = check_status(epoch_, "epoch")
        who = check_who(who)
        if kind is None:
            prefix = keys.STATUS_PREFIX
        elif id is None:
            prefix = keys.status_key(check_resource(kind, "-")[0], "")
        else:
            prefix = keys.status_key(*check_resource(kind, id))
        end = keys.range_end(prefix) if id is None else None
        changed = 0
        kvs, _ = self.client.range(prefix, end)
        for kv in kvs:
            while kv is not None:
                record = _decode(kv)
                old = (record or {}).get("epoch")
                if record is None or old is None or old == epoch_:
                    break
                adoption = {
                    "at": round(time.time(), 3),
                    "who": who,
                    "key": kv.key.decode("utf-8", "replace"),
                    "old_epoch": old,
                    "old_fence": record.get("fence"),
                    "new_epoch": epoch_,
                }
                record.update(fence=None, epoch=epoch_)
                audit = keys.EPOCH_ADOPTION_PREFIX + b"%020d" % time.time_ns()
                result = self.client.txn(
                    [cmp_mod(kv.key, kv.mod_revision)],
                    [
                        op_put(kv.key, json.dumps(record, separators=(",", ":")).encode()),
                        op_put(audit, json.dumps(adoption).encode()),
                    ],
                    [op_range(kv.key)],
                )
                if result.succeeded:
                    changed += 1
                    with self._known_lock:
                        self._known.pop(kv.key, None)
                    break
                kv = (result.kvs(0) or [None])[0]  # changed meanwhile: look again
        return changed

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
