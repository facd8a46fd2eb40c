"""The only code that talks to etcd: its v3 JSON gateway over a few kept-alive connections, with failover.

Why not etcd3gw: about half of each etcd3gw call is `requests` overhead (see ANCHORS.md), and a lock
acquire+release is two calls on the hot path. ``http.client`` on a kept-alive connection costs ~0.4 ms per call
on loopback.

Connections (issue 14: a process's connections must not grow with its waiting threads):
- unary requests borrow one of ``REQUEST_CONNECTIONS`` pooled connections for the length of one request
  (lockd.etcd.pool), whatever the number of threads or green threads;
- the session's upkeep (lease grant, keepalive, revoke, deferred cleanups) has a connection of its own
  (``urgent=True``), so a burst of waiters can never hold up a keepalive, and one opened when the session
  starts, before a process short of descriptors could be refused a new one;
- every watch goes over one WebSocket per member (lockd.etcd.watch).
So a client holds at most ``REQUEST_CONNECTIONS`` + 2 connections to its current member. A process out of
descriptors gets ResourceExhausted for the request that needed a new connection; nothing fails over.

Failover: one endpoint is current for the whole client. A connection failure, a timeout or an answer that
says the member cannot serve now (stopping, leaderless, a learner: lockd.etcd.answers sorts them) moves the
client to the next endpoint and repeats the request there, once per endpoint; when a member *answered* that it
cannot serve now (not a refused connection, not a timeout), the client asks round again after a short pause,
until one request timeout has passed since the call began: an election takes about a second, and a client
that lists one member has nobody else to ask meanwhile. A request given a ``deadline``
(a ``time.monotonic()`` instant: a timed acquire's) is not sent, to any member, once it has passed; a send under
way runs to its answer or its timeout. So a call ends by the caller's deadline plus one send's timeout at most,
whatever the network does (``DeadlineExceeded``). A repeated write may have landed the first time: callers that
write make their writes idempotent or recognise their own result by something only that call wrote (a per-call
id, see lock.py and lockd.status.etcd_store); ``TxnResult.repeated`` says when a txn was sent more than once.
The watch stream of a failed endpoint is closed so its waiters re-read and re-watch through a live member.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from lockd.errors import BackendError, BackendTimeout, DeadlineExceeded, ResourceExhausted
from lockd.etcd import answers
from lockd.etcd.pool import Connection, ConnectionPool, exhausted
from lockd.etcd.tls import TLSFiles
from lockd.etcd.watch import Inbox, Watch, WatchHub
from lockd.etcd.wire import KeyValue, b64
from lockd.options import BackendOptions

__all__ = ["EtcdClient", "EtcdRequestError", "KeyValue", "TxnResult", "b64", "cmp_create", "cmp_mod", "cmp_value"]

LOG = logging.getLogger(__name__)

# gRPC NotFound: e.g. a lease that already expired.
GRPC_NOT_FOUND = 5
#: After every member answered "not now", the first wait before asking again, and the longest (doubling between).
_NOT_NOW_PAUSE, _NOT_NOW_PAUSE_MAX = 0.05, 0.5
#: Pooled connections for unary requests per client. A request holds one for about a millisecond, so eight
#: serve hundreds of threads (`lockd bench --scenario waiters`); the issue's floor is 16 in all.
REQUEST_CONNECTIONS = 8


@dataclasses.dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]
    #: The txn was sent more than once (an answer was lost): a failed compare may be our own earlier success.
    repeated: bool = False

    def kvs(self, index: int) -> list[KeyValue]:
        """The keys returned by the range at ``index`` of whichever branch ran."""
        body = self.responses[index].get("response_range", {})
        return [KeyValue.from_json(kv) for kv in body.get("kvs", [])]


class EtcdRequestError(BackendError):
    """etcd refused a request (a gRPC error code other than the ones worth a retry on another member)."""

    def __init__(self, message: str, code: int, endpoint: str | None = None) -> None:
        super().__init__(message, endpoint)
        self.code = code


# Builders for the txn's compare and operation objects, in the gateway's JSON shape.


def cmp_create(key: bytes, revision: int, result: str = "EQUAL", end: bytes | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"key": b64(key), "target": "CREATE", "result": result, "create_revision": str(revision)}
    if end is not None:
        c["range_end"] = b64(end)
    return c


def cmp_value(key: bytes, value: bytes) -> dict[str, Any]:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def cmp_mod(key: bytes, revision: int, result: str = "EQUAL") -> dict[str, Any]:
    return {"key": b64(key), "target": "MOD", "result": result, "mod_revision": str(revision)}


def op_put(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


def op_range(key: bytes, end: bytes | None = None, **options: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"key": b64(key), **options}
    if end is not None:
        r["range_end"] = b64(end)
    return {"request_range": r}


def op_delete(key: bytes, end: bytes | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"key": b64(key)}
    if end is not None:
        d["range_end"] = b64(end)
    return {"request_delete_range": d}


class EtcdClient:
    """A thread-safe etcd v3 gateway client over one or more members."""

    def __init__(self, options: BackendOptions, on_failure: Callable[[], None] | None = None) -> None:
        """``on_failure`` is called each time a member fails a request or a watch (e.g. to count it)."""
        self.options = options
        self._on_failure = on_failure
        self._current = 0
        # TLS files are re-read for each new connection once they change on disk (lockd.etcd.tls).
        self.tls = TLSFiles(options) if options.https else None
        self._requests = ConnectionPool(REQUEST_CONNECTIONS, self._new_connection)
        # The session's own connection: it may spend a spare descriptor, or an idle request connection's (pool doc).
        self._upkeep = ConnectionPool(1, self._new_connection, reserve=True, make_room=self._requests.shed_idle)
        self._hubs: dict[int, WatchHub] = {}
        self._hubs_lock = threading.Lock()
        self._closed = False

    # -- connections ----------------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The context for a new connection (None: plain HTTP), from the TLS files as they are now."""
        return self.tls.current().context if self.tls is not None else None

    def endpoint_name(self, index: int | None = None) -> str:
        host, port = self.options.endpoints[self._current if index is None else index]
        return f"{self.options.scheme}://{host}:{port}"

    def _new_connection(self, index: int, timeout: float) -> http.client.HTTPConnection:
        host, port = self.options.endpoints[index]
        if self.tls is not None:
            return self.tls.connection(index, host, port, timeout)
        return Connection(host, port, timeout=timeout)

    def connections(self) -> int:
        """Connections this client keeps open now (idle pooled ones and watch streams): tests, the bench."""
        with self._hubs_lock:
            hubs = sum(1 for hub in self._hubs.values() if not hub.closed)
        return self._requests.open_connections() + self._upkeep.open_connections() + hubs

    def _fail_over(self, failed: int, why: str = "") -> None:
        """Move the whole client off a member that did not answer, and wake waiters watching through it."""
        if self._on_failure is not None:
            self._on_failure()
        if self._current == failed and len(self.options.endpoints) > 1:
            self._current = (failed + 1) % len(self.options.endpoints)
            because = f" ({why})" if why else ""
            LOG.warning("etcd %s failed%s; moving to %s", self.endpoint_name(failed), because, self.endpoint_name())
        self._requests.drop_member(failed)
        self._upkeep.drop_member(failed)
        self.close_watches(endpoint=failed)

    # -- requests -------------------------------------------------------------------------------------------

    def call(
        self,
        path: str,
        body: dict[str, Any],
        timeout: float | None = None,
        urgent: bool = False,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """POST ``/v3/<path>`` and return the decoded answer, trying every member once.

        ``urgent``: the session's upkeep, sent on its own connection (see the module doc). ``deadline``: a
        ``time.monotonic()`` instant after which the request is not sent again, to any member (module doc).
        Raises:
            BackendTimeout: no member answered within ``timeout`` (default: the request timeout).
            DeadlineExceeded: ``deadline`` passed before a member answered (a BackendTimeout: whether a write
                landed is unknown, when one was sent).
            ResourceExhausted: the process could not open a connection; nothing was sent, nothing failed over.
            BackendError: no member could be reached, or etcd refused the request (EtcdRequestError).
        """
        return self._call(path, body, timeout, urgent, deadline)[0]

    def _call(
        self,
        path: str,
        body: dict[str, Any],
        timeout: float | None = None,
        urgent: bool = False,
        deadline: float | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """``call``, also saying whether the request may have reached etcd more than once."""
        if self._closed:
            raise BackendError("etcd client is closed")
        timeout = self.options.request_timeout if timeout is None else timeout
        payload = json.dumps(body).encode()
        timed_out = False
        last_error = "no endpoint"
        sends = [0]  # bumped by _post each time the request goes out on a connection
        pool = self._upkeep if urgent else self._requests
        began = time.monotonic()
        send_timeout, pause = timeout, _NOT_NOW_PAUSE
        while True:
            not_now = False
            for _ in range(len(self.options.endpoints)):
                index = self._current
                if deadline is not None and time.monotonic() >= deadline:
                    tried = f" (last: {last_error})" if sends[0] else ""
                    raise DeadlineExceeded(f"the caller's deadline passed before etcd answered /v3/{path}{tried}")
                try:
                    return self._post(pool, index, path, payload, send_timeout, sends), sends[0] > 1
                except TimeoutError as exc:
                    timed_out, last_error = True, f"timed out after {send_timeout:g}s: {exc}"
                except OSError as exc:
                    if exhausted(exc):
                        raise ResourceExhausted(f"cannot reach etcd for /v3/{path}: {exc}") from exc
                    last_error = f"{type(exc).__name__}: {exc}"
                except http.client.HTTPException as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                except _RetryOnOtherMember as exc:
                    last_error, not_now = str(exc), not_now or exc.not_now
                self._fail_over(index, last_error)
            # A member that answered "not now" (an election under way, a member stopping) is worth asking again
            # shortly; a client that knows one member has nobody else to ask. Only within one request timeout
            # of the call's start, and before the caller's deadline, so the module doc's bounds still hold.
            send_timeout = began + timeout - time.monotonic() - pause
            if not not_now or send_timeout <= 0 or (deadline is not None and time.monotonic() + pause >= deadline):
                break
            time.sleep(pause)
            pause = min(2 * pause, _NOT_NOW_PAUSE_MAX)
        where = ",".join(self.endpoint_name(i) for i in range(len(self.options.endpoints)))
        if timed_out:
            raise BackendTimeout(f"etcd did not answer /v3/{path}: {last_error}", where)
        raise BackendError(f"etcd unreachable for /v3/{path}: {last_error}", where)

    def _post(
        self, pool: ConnectionPool, index: int, path: str, payload: bytes, timeout: float, sends: list[int]
    ) -> dict[str, Any]:
        with pool.borrow(index, timeout) as conn:
            for attempt in (0, 1):
                try:
                    sends[0] += 1
                    conn.request("POST", "/v3/" + path, payload, {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    data = response.read()
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # A kept-alive connection the server closed while idle: reconnect once, same member.
                    if attempt:
                        raise
                    pool.reconnect(conn)
        answer = answers.decode(data)
        verdict = answers.classify(response.status, answer)
        if answer is not None and verdict is answers.Answer.SERVED:
            return answer
        if answer is None:
            # e.g. etcd started from a config file without enable-grpc-gateway answers "404 page not found"
            raise _RetryOnOtherMember(
                f"HTTP {response.status} with a non-JSON answer {data[:60]!r}: is etcd's JSON gateway enabled?",
                not_now=False,
            )
        message = answers.message(answer, response.status)
        if verdict is answers.Answer.ELSEWHERE:
            raise _RetryOnOtherMember(f"{message} (HTTP {response.status}, code {answers.grpc_code(answer)})")
        raise EtcdRequestError(
            f"etcd refused /v3/{path}: {message}", answers.grpc_code(answer), self.endpoint_name(index)
        )

    # -- kv -------------------------------------------------------------------------------------------------

    def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
        timeout: float | None = None,
        urgent: bool = False,
        deadline: float | None = None,
    ) -> TxnResult:
        body = {"compare": compare, "success": success, "failure": failure or []}
        answer, repeated = self._call("kv/txn", body, timeout, urgent, deadline)
        return TxnResult(
            succeeded=bool(answer.get("succeeded", False)),
            revision=int(answer.get("header", {}).get("revision", 0)),
            responses=answer.get("responses", []),
            repeated=repeated,
        )

    def range(
        self, key: bytes, end: bytes | None = None, deadline: float | None = None, **options: Any
    ) -> tuple[list[KeyValue], int]:
        """Keys in [key, end) (or just ``key``) and the store revision they were read at."""
        body = op_range(key, end, **options)["request_range"]
        answer = self.call("kv/range", body, deadline=deadline)
        kvs = [KeyValue.from_json(kv) for kv in answer.get("kvs", [])]
        return kvs, int(answer.get("header", {}).get("revision", 0))

    def get(self, key: bytes, deadline: float | None = None) -> KeyValue | None:
        kvs, _ = self.range(key, deadline=deadline)
        return kvs[0] if kvs else None

    def delete(self, key: bytes, end: bytes | None = None) -> int:
        answer = self.call("kv/deleterange", op_delete(key, end)["request_delete_range"])
        return int(answer.get("deleted", 0))

    # -- leases ---------------------------------------------------------------------------------------------

    def lease_grant(self, ttl: float, deadline: float | None = None) -> tuple[int, float]:
        """A new lease; returns its id and the TTL etcd granted (it raises TTLs below its minimum)."""
        answer = self.call("lease/grant", {"TTL": str(max(1, round(ttl)))}, urgent=True, deadline=deadline)
        if answer.get("error"):
            raise BackendError(f"etcd refused a lease: {answer['error']}", self.endpoint_name())
        return int(answer["ID"]), float(answer.get("TTL", ttl))

    def lease_keepalive(self, lease_id: int, timeout: float | None = None) -> float:
        """Refresh a lease; returns the TTL it has now, 0 if etcd no longer knows it."""
        answer = self.call("lease/keepalive", {"ID": str(lease_id)}, timeout, urgent=True)
        return float(answer.get("result", {}).get("TTL", 0))

    def lease_revoke(self, lease_id: int, timeout: float | None = None, deadline: float | None = None) -> bool:
        """Revoke a lease (deleting its keys); False if it was already gone."""
        try:
            self.call("lease/revoke", {"ID": str(lease_id)}, timeout, urgent=True, deadline=deadline)
        except EtcdRequestError as exc:
            if exc.code == GRPC_NOT_FOUND:
                return False
            raise
        return True

    def lease_time_to_live(self, lease_id: int) -> float:
        """Seconds left on a lease, -1 if it is gone."""
        answer = self.call("lease/timetolive", {"ID": str(lease_id)})
        return float(answer.get("TTL", -1))

    def leases(self) -> list[int]:
        answer = self.call("lease/leases", {})
        return [int(item["ID"]) for item in answer.get("leases", [])]

    def cluster_status(self, timeout: float | None = None) -> dict[str, Any]:
        """The current member's status: answers only while etcd can serve (readiness probes)."""
        return self.call("maintenance/status", {}, timeout)

    # -- watches --------------------------------------------------------------------------------------------

    def watch(
        self,
        key: bytes,
        end: bytes | None = None,
        start_revision: int | None = None,
        filters: Sequence[str] = (),
        inbox: Inbox | None = None,
    ) -> Watch:
        """Open a watch on the current member's shared stream (lockd.etcd.watch); failover and session loss end it.

        Raises:
            ResourceExhausted: no descriptor for the stream's socket (nothing fails over).
            BackendError: the member did not accept the watch; the client has moved to the next member.
        """
        if self._closed:
            raise BackendError("etcd client is closed")
        index = self._current
        try:
            return self._hub(index).open(key, end, start_revision, filters, inbox)
        except ResourceExhausted:
            raise
        except BackendError:
            self._fail_over(index)
            raise

    def _hub(self, index: int) -> WatchHub:
        """The member's watch stream, opened on first use and again after it closed."""
        with self._hubs_lock:
            hub = self._hubs.get(index)
            if hub is None or hub.closed:
                host, port = self.options.endpoints[index]
                scheme = "wss" if self.tls is not None else "ws"
                url = f"{scheme}://{host}:{port}/v3/watch"
                hub = self._hubs[index] = WatchHub(index, url, self.options.request_timeout, self._ssl_context())
            return hub

    def close_watches(self, endpoint: int | None = None) -> None:
        """End open watches (all, or those on one member) so their waiters re-check and re-watch."""
        with self._hubs_lock:
            hubs = [hub for index, hub in self._hubs.items() if endpoint is None or index == endpoint]
        for hub in hubs:
            hub.close("closed by the client (member failed over, or session lost)")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self.close_watches()
        self._requests.close()
        self._upkeep.close()


class _RetryOnOtherMember(Exception):
    """The member cannot serve this request; ``not_now``: it said so itself (lockd.etcd.answers), so it may again
    shortly, as opposed to an answer that is not etcd's at all."""

    def __init__(self, message: str, not_now: bool = True) -> None:
        super().__init__(message)
        self.not_now = not_now
