"""Force-break: free a lock whoever holds it, in one txn that also writes the audit record.

Theory of operation
-------------------
A break reads the lock key, then runs one txn: "the key's mod_revision is still the token we read" ->
delete the key, delete the holder's queue entry (a lockd holder that came through the queue keeps it until
release, and its successor watches it: without this the successor would wait for the holder's lease), and
put the audit record ``/lockd/audit/<name>/<token>``. The record is what makes a break recognisable later:

- by the breaker: the record carries a random ``break_id``. When the client repeated the txn because an
  answer was lost, the repeat fails its compare against the first send's delete; the failed txn returns
  the audit record, and our ``break_id`` in it says the break landed. A lock key that merely looks the
  same (same holder value) proves nothing: only the id does.
- by the holder: a lockd release is "delete (or grant) if mod_revision == token". A repeated release whose
  first send landed also fails its compare; the holder then reads ``/lockd/audit/<name>/<token>``, and no record
  while its lease is still confirmed means nobody but the holder itself deleted the key (see
  lockd.lock.Mutex.release; the read happens only after a repeated txn, never on the common path).

Not recognised: a delete by something that writes no record (stock tooz's ``break_()``, ``etcdctl del``)
during a release whose answer was lost; the release then reports success. That needs two faults at once.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from lockd.errors import BackendError
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, cmp_mod, op_delete, op_put, op_range
from lockd.lock import Holder

#: A break retries when the lock changed hands between its read and its txn; after this many it gives up.
BREAK_ATTEMPTS = 3


@dataclass(frozen=True)
class BreakRecord:
    """One force-break as audited: which acquisition (``token``) of which lock, whose, when, asked by whom."""

    name: str
    token: int
    holder: Holder
    broken_at: float
    requested_by: str

    def to_json(self, break_id: str) -> dict[str, Any]:
        holder = self.holder
        return {
            "action": "break",
            "name": self.name,
            "token": self.token,
            "holder": {"member": holder.member, "host": holder.host, "pid": holder.pid} if holder.is_lockd else None,
            "broken_at": self.broken_at,
            "requested_by": self.requested_by,
            "break_id": break_id,
        }


def free_ops(name: str, holder_value: bytes) -> list[dict[str, Any]]:
    """The deletes that free a lock whoever holds it: its key, and the holder's queue entry if it has one."""
    ops = [op_delete(keys.lock_key(name))]
    waiter = Holder.decode(holder_value).waiter
    if waiter:
        ops.append(op_delete(keys.queue_key(name, waiter)))
    return ops


def break_lock(client: EtcdClient, name: str, requested_by: str, token: int | None = None) -> BreakRecord | None:
    """Free lock ``name`` whoever holds it and audit it; None when it is not held.

    ``token``: break only that acquisition (the one a deadlock report named); None when the lock is held at
    another token by now, so a break decided on an old view never frees the next holder's lock.
    The old holder's ``is_still_owner()`` turns False and its release reports False; its session and other
    locks are untouched.
    Raises:
        BackendError: etcd failed, or the lock changed hands on every attempt; it may or may not have been
            broken (look again).
    """
    key = keys.lock_key(name)
    break_id = uuid.uuid4().hex
    for _ in range(BREAK_ATTEMPTS):
        kv = client.get(key)
        if kv is None or (token is not None and kv.mod_revision != token):
            return None
        record = BreakRecord(name, kv.mod_revision, Holder.decode(kv.value), time.time(), requested_by)
        audit = json.dumps(record.to_json(break_id), separators=(",", ":")).encode()
        result = client.txn(
            [cmp_mod(key, kv.mod_revision)],
            [*free_ops(name, kv.value), op_put(keys.audit_key(name, kv.mod_revision), audit)],
            [op_range(keys.audit_key(name, kv.mod_revision))],
        )
        if result.succeeded or (result.repeated and _break_id(result.kvs(0)) == break_id):
            return record
        # The holder changed between our read and the txn: look again at whoever holds it now.
    raise BackendError(f"lock {name!r} kept changing hands; try again")


def _break_id(kvs: list[Any]) -> str | None:
    try:
        data = json.loads(kvs[0].value) if kvs else None
    except ValueError:
        return None
    return data.get("break_id") if isinstance(data, dict) else None
