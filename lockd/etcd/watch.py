"""A streaming etcd watch over the JSON gateway: lock waiters wait on it, the admin API's view follows it.

The gateway answers ``POST /v3/watch`` with one JSON object per line for as long as the connection lives:
first ``{"result": {"created": true}}``, then ``{"result": {"events": [...]}}`` batches (an event's ``type`` is
omitted for PUT, the enum's zero value). A batch never splits a revision, so the changes of one txn or one lease
expiry arrive together.

The constructor returns only after etcd confirmed the watch, so a caller that re-reads afterwards cannot miss a
change between its read and the watch.

Start revision: a watch from now is "synced" and hears an event within a millisecond. A watch from a past
revision is served from etcd's unsynced group, which it catches up only every 100 ms (mvcc syncWatchersLoop):
right for a view that must not miss history, slow for a lock handoff.

Liveness: a stopped etcd closes the connection and the stream ends. A member that goes silent without closing
(paused, partitioned) is noticed by TCP keepalive on the stream's socket, or by ``abort()`` from the client when
it fails over, or from a session that was lost.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lockd.errors import BackendError
from lockd.etcd.wire import KeyValue, b64

if TYPE_CHECKING:
    from lockd.etcd.client import EtcdClient

# Kernel keepalive on the watch socket: probe after 10 s of silence, every 5 s, give up after 3 misses.
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))


@dataclass(frozen=True)
class Event:
    deleted: bool
    kv: KeyValue


class StreamBroken(Exception):
    """The watch ended (connection closed or aborted, canceled, compacted): re-read, then watch again."""


class WatchStream:
    """One ``/v3/watch`` on ``key`` (or ``[key, end)``); iterate :meth:`batches`, interrupt with :meth:`abort`."""

    def __init__(
        self,
        client: EtcdClient,
        endpoint: int,
        key: bytes,
        end: bytes | None = None,
        start_revision: int | None = None,
        filters: Sequence[str] = (),
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self._aborted = False
        self._conn = client.new_connection(endpoint, client.options.request_timeout)
        where = client.endpoint_name(endpoint)
        create: dict[str, Any] = {"key": b64(key)}
        if end is not None:
            create["range_end"] = b64(end)
        if start_revision is not None:
            create["start_revision"] = str(start_revision)
        if filters:
            create["filters"] = list(filters)
        try:
            self._conn.connect()
            _set_keepalive(self._conn.sock)
            body = json.dumps({"create_request": create}).encode()
            self._conn.request("POST", "/v3/watch", body, {"Content-Type": "application/json"})
            self._response = self._conn.getresponse()
            if self._response.status != 200:
                raise http.client.HTTPException(f"HTTP {self._response.status}")
            created = json.loads(self._response.readline() or b"{}").get("result", {}).get("created")
            if not created:
                raise http.client.HTTPException("etcd did not confirm the watch")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.close()
            raise BackendError(f"cannot open a watch: {exc}", where) from exc

    def batches(self, deadline: float | None = None) -> Iterator[list[Event]]:
        """Each batch of events in revision order, until ``deadline`` (monotonic; None waits for ever).

        Returns (ends the iteration) when the deadline passes.
        Raises:
            StreamBroken: the stream ended for any other reason; nothing after the last batch was seen.
        """
        try:
            while not self._aborted:
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    return
                self._conn.sock.settimeout(timeout)
                try:
                    line = self._response.readline()
                except TimeoutError:
                    if self._aborted:
                        break
                    return
                if not line:
                    break
                result: dict[str, Any] | None = json.loads(line).get("result")
                if result is None or result.get("canceled") or int(result.get("compact_revision", 0)):
                    break
                events = result.get("events")
                if events:
                    yield [Event(ev.get("type") == "DELETE", KeyValue.from_json(ev.get("kv", {}))) for ev in events]
        except (OSError, http.client.HTTPException, ValueError, AttributeError) as exc:
            raise StreamBroken(str(exc)) from exc
        raise StreamBroken("aborted" if self._aborted else "etcd closed the watch")

    def abort(self) -> None:
        """Wake the reading thread (from any thread): its iteration ends with StreamBroken."""
        self._aborted = True
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.client.forget_watch(self)
        self._conn.close()


def _set_keepalive(sock: socket.socket | None) -> None:
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in _KEEPALIVE:
        if hasattr(socket, name):  # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
