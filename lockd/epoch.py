"""Which lifetime of an etcd cluster a fencing token comes from: the cluster's lockd *epoch*.

Theory of operation
-------------------
A fencing token is the lock key's etcd revision, and revisions only grow within one lifetime of a cluster's
data. Two events start them over, and a store that remembers tokens (the SQL status store keeps the highest
token written per resource) must not compare across them:

- **rebuilt from scratch** (data directories wiped): revisions start again at 1, so every new token is below
  what the store has seen and every fenced write would be refused for good; or, once the new cluster's
  revision passes the old high-water mark, a token from the new cluster would be compared with one from the
  old, as if they were one sequence;
- **restored from a snapshot** (``etcdctl snapshot restore``): the keyspace, and the revision, go back to the
  snapshot's; revisions issued after the snapshot are issued a second time.

etcd's own identity does not tell these apart: the ``cluster_id`` in every response header is a hash of the
members' names, peer URLs and cluster token, so a cluster rebuilt with the same configuration (as
``lockd serve``'s embedded etcd is, with a wiped state directory) has the same cluster_id as before; seen here
with etcd 3.4.23, two fresh data directories, same flags: cluster_id 7615349935863740184 both times.

So lockd keeps its own: ``/lockd/epoch`` holds a random id. The first lockd session on a cluster that has none
creates it, in the same txn that announces the member (no extra round trip); every session reads it there, and
a lock's ``epoch`` travels with its ``token`` to the status stores. A rebuilt cluster has no epoch key, so it
gets a new epoch by itself. A restored cluster has the snapshot's epoch key: ``rotate()`` (``lockd epoch
rotate``) gives it a new one; operators run it after a restore, before clients connect.

What a store does with a token from another epoch: refuse it (reason ``epoch``) until an operator adopts the
new epoch for those resources (``lockd epoch adopt``), which is audited. Not automatic, because the store
cannot tell "the old cluster is gone" from "two clusters are alive" (a rebuild while the old cluster still
serves some hosts, a restore beside the original): adopting whichever epoch wrote last would let both sides'
holders write in turn, the very failure fencing exists to stop. Only the operator knows the old one is dead.

Every epoch a cluster had is kept under ``/lockd/epochs/<revision>`` (who, when, why, the previous one), so
``lockd epoch show`` answers what happened.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, TxnResult, cmp_create, cmp_mod, op_put, op_range
from lockd.etcd.wire import KeyValue


def _record(epoch: str, who: str, reason: str, previous: str | None) -> bytes:
    body = {"epoch": epoch, "at": round(time.time(), 3), "who": who, "reason": reason, "previous": previous}
    return json.dumps(body, separators=(",", ":")).encode()


def _puts(epoch: str, value: bytes) -> list[dict[str, Any]]:
    """The current epoch and its history entry, written together."""
    return [op_put(keys.EPOCH_KEY, value), op_put(keys.EPOCH_HISTORY_PREFIX + epoch.encode(), value)]


@dataclasses.dataclass(frozen=True)
class Creation:
    """The parts of a txn that creates the epoch when the cluster has none and reads it otherwise. Callers
    append their own ops to ``success`` and ``failure`` (Session._announce writes its member record there)."""

    epoch: str
    compare: list[dict[str, Any]]
    success: list[dict[str, Any]]
    failure: list[dict[str, Any]]

    @classmethod
    def new(cls, who: str) -> Creation:
        epoch = uuid.uuid4().hex
        value = _record(epoch, who, "first lockd session on this cluster", None)
        return cls(epoch, [cmp_create(keys.EPOCH_KEY, 0)], _puts(epoch, value), [op_range(keys.EPOCH_KEY)])

    def outcome(self, result: TxnResult) -> str:
        """The cluster's epoch after the txn: ours if it created it, else the one it read."""
        if result.succeeded:
            return self.epoch
        kv = (result.kvs(0) or [None])[0]
        if kv is None:  # deleted between compare and range: cannot happen inside one txn
            raise RuntimeError("etcd answered that /lockd/epoch exists but returned none")
        return json.loads(kv.value)["epoch"]


def ensure(client: EtcdClient, who: str) -> str:
    """The cluster's epoch, created if it has none."""
    creation = Creation.new(who)
    return creation.outcome(client.txn(creation.compare, creation.success, creation.failure))


def current(client: EtcdClient) -> dict[str, Any] | None:
    """The cluster's epoch record, or None if no lockd session has run on it yet."""
    kv: KeyValue | None = client.get(keys.EPOCH_KEY)
    return json.loads(kv.value) if kv is not None else None


def rotate(client: EtcdClient, who: str, reason: str) -> tuple[str | None, str]:
    """Give the cluster a new epoch (after restoring a snapshot); returns (previous, new). Kept in the history."""
    while True:
        kv = client.get(keys.EPOCH_KEY)
        previous = json.loads(kv.value)["epoch"] if kv is not None else None
        epoch = uuid.uuid4().hex
        value = _record(epoch, who, reason, previous)
        compare = [cmp_mod(keys.EPOCH_KEY, kv.mod_revision if kv is not None else 0)]
        if client.txn(compare, _puts(epoch, value)).succeeded:
            return previous, epoch


def history(client: EtcdClient) -> list[dict[str, Any]]:
    """Every epoch this cluster's data has had, oldest first."""
    kvs, _ = client.range(keys.EPOCH_HISTORY_PREFIX, keys.range_end(keys.EPOCH_HISTORY_PREFIX))
    return sorted((json.loads(kv.value) for kv in kvs), key=lambda r: r["at"])
