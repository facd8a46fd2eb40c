"""A streaming etcd watch over a key range that reports every PUT and DELETE, for the admin API's lock view.

The JSON gateway answers ``POST /v3/watch`` with one JSON object per line for as long as the connection lives:
first ``{"result": {"created": true, ...}}``, then ``{"result": {"events": [...], "header": {...}}}`` batches
(an event's ``type`` is omitted for PUT, the enum's zero value). A batch never splits one revision, so the
changes of one txn (or of one lease expiry) arrive together.

Liveness: a stopped etcd closes the connection and the stream ends. A member that goes silent without closing
(paused, partitioned) is noticed by TCP keepalive on the stream's socket, at no cost to us while idle.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lockd.errors import BackendError
from lockd.etcd.client import EtcdClient, KeyValue, b64

# Kernel keepalive on the watch socket: probe after 10 s of silence, every 5 s, give up after 3 misses.
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))


@dataclass(frozen=True)
class Event:
    deleted: bool
    kv: KeyValue


class StreamBroken(Exception):
    """The watch ended (connection closed, canceled, compacted): re-read the range, then watch again."""


class RangeWatch:
    """One ``/v3/watch`` on ``[key, end)`` from ``start_revision``; iterate :meth:`batches`, stop with :meth:`abort`."""

    def __init__(self, client: EtcdClient, endpoint: int, key: bytes, end: bytes, start_revision: int) -> None:
        self._aborted = False
        self._conn = client.new_connection(endpoint, client.options.request_timeout)
        where = client.endpoint_name(endpoint)
        body = {"create_request": {"key": b64(key), "range_end": b64(end), "start_revision": str(start_revision)}}
        try:
            self._conn.connect()
            _set_keepalive(self._conn.sock)
            self._conn.request("POST", "/v3/watch", json.dumps(body).encode(), {"Content-Type": "application/json"})
            self._response = self._conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise BackendError(f"cannot open a watch: {exc}", where) from exc
        if self._response.status != 200:
            self.close()
            raise BackendError(f"watch refused with HTTP {self._response.status}", where)
        self._conn.sock.settimeout(None)  # block until etcd speaks; keepalive and abort() end the wait

    def batches(self) -> Iterator[list[Event]]:
        """Each batch of events in revision order.

        Raises:
            StreamBroken: the stream ended for any reason; nothing after the last batch was seen.
        """
        try:
            while not self._aborted:
                line = self._response.readline()
                if not line:
                    break
                result: dict[str, Any] = json.loads(line).get("result")
                if result is None or result.get("canceled") or int(result.get("compact_revision", 0)):
                    break
                events = result.get("events")
                if events:
                    yield [Event(ev.get("type") == "DELETE", KeyValue.from_json(ev.get("kv", {}))) for ev in events]
        except (OSError, http.client.HTTPException, ValueError, AttributeError) as exc:
            raise StreamBroken(str(exc)) from exc
        finally:
            self.close()
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
        self._conn.close()


def _set_keepalive(sock: socket.socket | None) -> None:
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in _KEEPALIVE:
        if hasattr(socket, name):  # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
