"""The locks under test, built the same way in the bench process and in its worker processes.

Every target answers ``open(member) -> Backend`` and ``Backend.lock(name) -> BenchLock`` with ``acquire`` and
``release``, so scenarios never branch on what they measure:

- ``lockd``: ``lockd+etcd3+http://`` through tooz's ``get_coordinator``, as Cinder would load it;
- ``tooz``: stock tooz ``etcd3+http://`` on the same etcd (what Cinder uses today);
- ``oslo-file``: oslo.concurrency's external file lock, the host-local reference (no network at all);
- ``etcd-floor``: two raw etcd txns (put-if-absent, delete) over one kept-alive ``http.client`` connection,
  the least any etcd lock can cost; only meaningful uncontended, since it cannot wait;
- ``etcd-mutex``: etcd's own ``concurrency.Mutex`` algorithm, request for request, over the same gateway
  (lockd.bench.etcd_mutex): what issue 25 holds lockd's handoff against, measured in the same loop.

A :class:`TargetSpec` is a small frozen dataclass so it pickles into ``multiprocessing`` spawn workers.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import urllib.parse
from typing import Protocol

from lockd.errors import UsageError

LOCKD = "lockd"
TOOZ = "tooz"
OSLO = "oslo-file"
FLOOR = "etcd-floor"
MUTEX = "etcd-mutex"
ALL_TARGETS = (LOCKD, TOOZ, OSLO, FLOOR, MUTEX)

#: Targets that hold an etcd lock on a lease: the contention scenario counts the leases they leave alive.
ETCD_LOCKS = (LOCKD, TOOZ, MUTEX)


class BenchLock(Protocol):
    def acquire(self, blocking: bool = True) -> bool: ...

    def release(self) -> object: ...


class Backend(Protocol):
    def lock(self, name: str) -> BenchLock: ...

    def close(self) -> None: ...


def parse_endpoint(url: str) -> str:
    """``HOST:PORT`` of the etcd a ``--backend-url`` names (lockd, stock tooz or plain http URL).

    Raises:
        UsageError: not an http URL of one of those kinds, or no host.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("lockd+etcd3+http", "etcd3+http", "http"):
        raise UsageError(f"--backend-url {url!r}: the bench needs lockd+etcd3+http://HOST:PORT (or http://HOST:PORT)")
    try:
        port = parts.port or 2379
    except ValueError:
        raise UsageError(f"--backend-url {url!r} has an invalid port") from None
    if not parts.hostname:
        raise UsageError(f"--backend-url {url!r} has no host")
    return f"{parts.hostname}:{port}"


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """What to build: ``kind`` is one of ALL_TARGETS; ``lease_ttl`` is used for lockd, stock tooz and etcd-mutex."""

    kind: str
    endpoint: str
    lease_ttl: float
    lock_dir: str

    @property
    def url(self) -> str:
        if self.kind == LOCKD:
            return f"lockd+etcd3+http://{self.endpoint}?lease_ttl={self.lease_ttl:g}"
        if self.kind == TOOZ:
            return f"etcd3+http://{self.endpoint}?lock_timeout={max(1, round(self.lease_ttl))}"
        if self.kind == OSLO:
            return f"file://{self.lock_dir}"
        return f"http://{self.endpoint}"

    def open(self, member: str) -> Backend:
        if self.kind in (LOCKD, TOOZ):
            return ToozBackend(self.url, member)
        if self.kind == OSLO:
            return OsloBackend(self.lock_dir)
        if self.kind == FLOOR:
            return FloorBackend(self.endpoint)
        if self.kind == MUTEX:
            from lockd.bench.etcd_mutex import MutexBackend

            return MutexBackend(self.endpoint, self.lease_ttl)
        raise UsageError(f"unknown bench target {self.kind!r}")


class ToozBackend:
    """A started tooz coordinator (with tooz's heartbeat, as Cinder starts it)."""

    def __init__(self, url: str, member: str) -> None:
        import tooz.coordination

        self.coordinator = tooz.coordination.get_coordinator(url, member.encode())
        self.coordinator.start(start_heart=True)

    def lock(self, name: str) -> BenchLock:
        return self.coordinator.get_lock(name.encode())

    def close(self) -> None:
        self.coordinator.stop()


class OsloBackend:
    """oslo.concurrency external (file) locks under one directory."""

    def __init__(self, lock_dir: str) -> None:
        self.lock_dir = lock_dir

    def lock(self, name: str) -> BenchLock:
        from oslo_concurrency import lockutils

        return lockutils.external_lock(name, lock_path=self.lock_dir)

    def close(self) -> None:
        pass


class FloorBackend:
    """Raw etcd gateway calls on one kept-alive connection: the floor an etcd lock's two txns cannot beat."""

    def __init__(self, endpoint: str) -> None:
        host, _, port = endpoint.rpartition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def lock(self, name: str) -> BenchLock:
        return FloorLock(self.conn, b"/lockd/bench/floor/" + name.encode())

    def close(self) -> None:
        self.conn.close()


class FloorLock:
    """put-if-absent then delete: exactly the two txns of an uncontended acquire+release."""

    def __init__(self, conn: http.client.HTTPConnection, key: bytes) -> None:
        self.conn = conn
        k = base64.b64encode(key).decode()
        absent = [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}]
        self._put = json.dumps(
            {"compare": absent, "success": [{"request_put": {"key": k, "value": base64.b64encode(b"x").decode()}}]}
        ).encode()
        self._delete = json.dumps({"compare": [], "success": [{"request_delete_range": {"key": k}}]}).encode()

    def _txn(self, body: bytes) -> dict:
        self.conn.request("POST", "/v3/kv/txn", body, {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        return json.loads(response.read())

    def acquire(self, blocking: bool = True) -> bool:
        return bool(self._txn(self._put).get("succeeded"))

    def release(self) -> bool:
        self._txn(self._delete)
        return True
