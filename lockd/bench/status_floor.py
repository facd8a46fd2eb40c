"""A fenced status transition against the one etcd txn it is made of, sent raw: issue 25's one-txn floor.

``lockd.status`` on etcd moves a resource with one txn when its read cache is warm (lockd/status/etcd_store.py):
compare the status key's mod_revision and the fencing lock key's mod_revision (the lock's token), put the new
record, and on failure read both keys back. The floor sends a txn of exactly that shape (the same two compares,
a put of a record of the same bytes, the same failure reads) to the same etcd's JSON gateway over one kept-alive
``http.client`` connection, the kind of connection lockd's client keeps, with nothing of lockd in between: what
is left of the transition's time above it is lockd's own cost (record building, checks, the client's pool).

Both are sampled in batches of BATCH, interleaved with their order alternating, after WARMUP cycles each, so the
machine's noise and etcd's compactions fall on both alike (as the uncontended scenario does).
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from typing import Any

from lockd.bench.gateway import Gateway
from lockd.bench.stats import latency_summary
from lockd.bench.targets import LOCKD, TargetSpec
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.etcd.wire import b64
from lockd.options import parse_backend_url
from lockd.status.etcd_store import EtcdStatusStore

BATCH = 50
WARMUP = 20
#: The issue's floor: a fenced transition p50 at most this many times the raw txn's p50.
FLOOR_RATIO = 1.1


class RawTxn:
    """The transition's txn without lockd: compare both mod_revisions, put the record, read back on failure."""

    def __init__(self, endpoint: str, key: bytes, lock_key: bytes, token: int, value: bytes) -> None:
        self.gateway = Gateway(endpoint)
        self.key, self.lock_key, self.token, self.value = b64(key), b64(lock_key), str(token), b64(value)
        self.revision = 0  # the key's mod_revision: 0 while it does not exist

    def send(self) -> None:
        """One txn; raises RuntimeError if its compare failed (nobody else writes these keys, so it must not)."""
        body = {
            "compare": [
                {"key": self.key, "target": "MOD", "result": "EQUAL", "mod_revision": str(self.revision)},
                {"key": self.lock_key, "target": "MOD", "result": "EQUAL", "mod_revision": self.token},
            ],
            "success": [{"request_put": {"key": self.key, "value": self.value}}],
            "failure": [
                {"request_range": {"key": self.key}},
                {"request_range": {"key": self.lock_key, "keys_only": True}},
            ],
        }
        answer = self.gateway.post("kv/txn", body)
        if not answer.get("succeeded"):
            raise RuntimeError(f"one-txn floor: the raw txn's compare failed: {answer}")
        self.revision = int(answer["header"]["revision"])

    def close(self) -> None:
        self.gateway.close()


def _timed(step: Any) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def measure(spec: TargetSpec, ops: int) -> dict[str, Any]:
    """``ops`` fenced transitions and ``ops`` raw txns of the same shape on ``spec``'s etcd, interleaved.

    ``spec`` is the lockd target: its coordinator holds the lock that fences every transition, as a Cinder
    driver holding a volume's lock would. Returns the two latency summaries (``transition``, ``one_txn``, in
    ms) and ``ratio`` = transition p50 / one-txn p50.

    Raises:
        RuntimeError: a transition was refused or a raw txn's compare failed (both are uncontended).
    """
    if spec.kind != LOCKD:
        raise ValueError(f"the one-txn floor fences with a lockd lock, not {spec.kind!r}")
    tag = uuid.uuid4().hex[:8]
    backend = spec.open(f"bench-one-txn-{os.getpid()}-{tag}")
    store = EtcdStatusStore(EtcdClient(parse_backend_url(spec.url)), owns_client=True)
    raw: RawTxn | None = None
    try:
        lock = backend.lock(f"bench-one-txn-{tag}")
        if not lock.acquire(blocking=True):
            raise RuntimeError("one-txn floor: could not take the fencing lock")
        vid = f"bench-one-txn-{tag}"
        moves = itertools.count()

        def transition() -> None:
            old, new = ("available", "deleting") if next(moves) % 2 == 0 else ("deleting", "available")
            result = store.compare_and_set("volume", vid, [old], new, fence=lock)
            if not result.ok:
                raise RuntimeError(f"one-txn floor: a fenced transition was refused: {result}")

        store.compare_and_set("volume", vid, [None], "available", fence=lock)
        for _ in range(WARMUP):  # the store's epoch read, its read cache, the history filling to its bound
            transition()
        record = store.client.get(keys.status_key("volume", vid))
        if record is None:
            raise RuntimeError("one-txn floor: the status record is gone")
        raw = RawTxn(spec.endpoint, b"/lockd/bench/one-txn/" + tag.encode(), lock.key, lock.token, record.value)
        for _ in range(WARMUP):
            raw.send()
        samples: dict[str, list[float]] = {"transition": [], "one_txn": []}
        steps = {"transition": transition, "one_txn": raw.send}
        for r in range(-(-ops // BATCH)):
            for name in ("transition", "one_txn") if r % 2 == 0 else ("one_txn", "transition"):
                n = min(BATCH, ops - len(samples[name]))
                samples[name].extend(_timed(steps[name]) for _ in range(n))
        lock.release()
    finally:
        if raw is not None:
            raw.close()
        store.close()
        backend.close()
    transition_ms, one_txn_ms = latency_summary(samples["transition"]), latency_summary(samples["one_txn"])
    return {
        "transition": transition_ms,
        "one_txn": one_txn_ms,
        "ratio": transition_ms["p50_ms"] / one_txn_ms["p50_ms"],
        "value_bytes": len(record.value),
    }
