"""etcd's own ``concurrency.Mutex``, request for request, over the JSON gateway: a control for the contention loop.

Issue 25 asks that a lockd handoff cost what etcd's Mutex pays. This is that algorithm (etcd-io/etcd
``client/v3/concurrency``: ``session.go``, ``mutex.go``, ``key.go``'s ``waitDeletes``) with nothing of lockd's
lock protocol, sent to the same gateway lockd uses: plain ``http.client`` on one kept-alive connection for the
KV requests, and lockd's :class:`~lockd.etcd.watch.WatchHub` (one WebSocket per process carrying every watch, as
the Go client's one gRPC watch stream) for the watch. It reproduces the Go code's requests, reads included,
because what it costs is the point; it is not a lock for anyone to use.

Requests, as the Go code makes them:
- Session: one lease per process (``lease/grant``), refreshed every TTL/3 (``lease/keepalive``, from a thread on
  its own connection, as the Go client's keepalive stream), revoked at close (``Session.Close``).
- ``Lock`` (``tryAcquire``): one txn on ``myKey`` = prefix + the lease id in hex: if its create_revision is 0, put
  it on the lease, else range it; either way range the owner (the first key under the prefix by create revision,
  limit 1). Its revision is ``myRev`` (the txn's header revision, or the key's create_revision when it existed).
  It holds when there is no owner or the owner is ``myKey``.
- Otherwise ``waitDeletes``: range the newest key under the prefix with create_revision <= myRev - 1 (sorted by
  create revision descending, limit 1); if there is none it is done; else watch that one key from the range's
  header revision until a DELETE event, cancel the watch, and range again. Then range ``myKey`` once more: if it
  is gone the session expired (``ErrSessionExpired``).
- ``Unlock``: delete ``myKey`` (``kv/deleterange``).

A contended acquisition is therefore one commit (the txn), two ranges in ``waitDeletes`` (one more for every
further key it has to wait for), a watch create and cancel, the final range of its own key, and the release one
more commit; a handoff is the releaser's delete, its event on the waiter's stream, the cancel and two ranges.

The watch starts at the range's header revision, a revision etcd already has: etcd puts such a watcher in its
"unsynced" group, which it catches up every 100 ms (mvcc ``syncWatchersLoop``; lockd.etcd.watch's docstring), so
a predecessor deleted before that catch-up is heard late. etcd's Mutex pays the same, so this copy does not avoid it.
"""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any

from lockd.bench.gateway import Gateway, GatewayError
from lockd.etcd.keys import range_end
from lockd.etcd.watch import StreamBroken, WatchHub
from lockd.etcd.wire import b64, unb64

#: Where the Mutex's queue keys live (a prefix of lockd's own space; nothing of tooz or lockd reads it).
PREFIX = b"/lockd/bench/mutex/"
#: How long one wait for a predecessor's delete may take before the bench gives up on the run.
WAIT_TIMEOUT = 120.0


def _revision(answer: dict[str, Any]) -> int:
    return int(answer.get("header", {}).get("revision", 0))


class MutexBackend:
    """One session (a lease kept alive) and one watch stream per process: ``concurrency.NewSession``."""

    def __init__(self, endpoint: str, lease_ttl: float, timeout: float = 10.0) -> None:
        self.kv = Gateway(endpoint, timeout)
        self._upkeep = Gateway(endpoint, timeout)
        ttl = max(1, round(lease_ttl))
        self.lease = int(self._upkeep.post("lease/grant", {"TTL": str(ttl)})["ID"])
        self.hub = WatchHub(0, f"ws://{endpoint}/v3/watch", timeout)
        self._stop = threading.Event()
        self._keeper = threading.Thread(
            target=self._keepalive, args=(ttl / 3.0,), name="etcd-mutex-keepalive", daemon=True
        )
        self._keeper.start()

    def lock(self, name: str) -> EtcdMutex:
        return EtcdMutex(self, PREFIX + name.encode())

    def close(self) -> None:
        """Session.Close: stop refreshing, revoke the lease (its keys go with it), close the connections."""
        self._stop.set()
        self._keeper.join(5)
        try:
            self._upkeep.post("lease/revoke", {"ID": str(self.lease)})
        finally:
            self.hub.close()
            self.kv.close()
            self._upkeep.close()

    def _keepalive(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self._upkeep.post("lease/keepalive", {"ID": str(self.lease)})
            except (OSError, http.client.HTTPException, GatewayError, ValueError):
                pass  # the next one may get through; an expired lease shows as ErrSessionExpired in acquire


class EtcdMutex:
    """``concurrency.NewMutex(session, name)``: ``acquire`` is ``Lock``, ``release`` is ``Unlock``."""

    def __init__(self, backend: MutexBackend, prefix: bytes) -> None:
        self.backend = backend
        self.prefix = prefix + b"/"
        self.my_key = self.prefix + f"{backend.lease:x}".encode()
        self.my_rev = -1
        key, pfx, end = b64(self.my_key), b64(self.prefix), b64(range_end(self.prefix))
        owner = {"key": pfx, "range_end": end, "sort_order": "ASCEND", "sort_target": "CREATE", "limit": "1"}
        self._try_acquire = {
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "lease": str(backend.lease)}}, {"request_range": owner}],
            "failure": [{"request_range": {"key": key}}, {"request_range": owner}],
        }
        self._last_create = {"key": pfx, "range_end": end, "sort_order": "DESCEND", "sort_target": "CREATE",
                             "limit": "1"}  # fmt: skip
        self._get_mine = {"key": key}
        self._delete = {"key": key}

    def acquire(self, blocking: bool = True) -> bool:
        """Mutex.Lock: True once held. Only the blocking form (TryLock deletes its key again: not measured here).

        Raises:
            GatewayError: an error answer, or this session's key was gone after waiting (ErrSessionExpired).
            StreamBroken: the watch ended (Go: "lost watcher waiting for delete"); the key is deleted first.
        """
        if not blocking:
            raise ValueError("etcd-mutex measures the blocking Lock only")
        kv = self.backend.kv
        answer = kv.post("kv/txn", self._try_acquire)
        responses = answer.get("responses") or []
        if answer.get("succeeded"):
            self.my_rev = _revision(answer)
        else:
            self.my_rev = int(responses[0]["response_range"]["kvs"][0]["create_revision"])
        owner = responses[1].get("response_range", {}).get("kvs") or []
        if not owner or int(owner[0]["create_revision"]) == self.my_rev:
            return True
        try:
            self._wait_deletes(self.my_rev - 1)
        except BaseException:
            self.release()  # as Lock does when the wait fails
            raise
        if not kv.post("kv/range", self._get_mine).get("kvs"):  # make sure the session is not expired
            raise GatewayError(f"etcd-mutex: {self.my_key!r} is gone: the session expired")
        return True

    def release(self) -> bool:
        """Mutex.Unlock: delete this session's key."""
        self.backend.kv.post("kv/deleterange", self._delete)
        self.my_rev = -1
        return True

    def _wait_deletes(self, max_create_rev: int) -> None:
        """key.go's waitDeletes: until no key under the prefix is older than ours, wait for the newest to go."""
        last_create = dict(self._last_create, max_create_revision=str(max_create_rev))
        while True:
            answer = self.backend.kv.post("kv/range", last_create)
            kvs = answer.get("kvs")
            if not kvs:
                return
            self._wait_delete(unb64(kvs[0]["key"]), _revision(answer))

    def _wait_delete(self, key: bytes, revision: int) -> None:
        """key.go's waitDelete: watch ``key`` from ``revision`` until a DELETE event, then cancel the watch."""
        watch = self.backend.hub.open(key, start_revision=revision)
        try:
            for batch in watch.batches(time.monotonic() + WAIT_TIMEOUT):
                if any(event.deleted for event in batch):
                    return
            raise StreamBroken(f"no DELETE of {key!r} within {WAIT_TIMEOUT:g} s")
        finally:
            watch.close()
