"""Every watch of a client on one WebSocket per etcd member: lock waiters share a stream, not a connection each.

Theory of operation
-------------------
etcd's JSON gateway serves ``/v3/watch`` over a WebSocket (grpc-websocket-proxy, in etcd 3.4 as shipped): each
text message we send is the next WatchRequest on one gRPC watch stream, each message back is one WatchResponse.
One stream carries any number of watches, which is what etcd's own Go client does over gRPC. A plain HTTP/1.1
POST cannot do this: Go's server reads (and discards) the rest of a request body before it answers, so a second
request on an open body is never seen (docs/transport.md has the probes and the sources).

A :class:`WatchHub` owns the socket to one member and a reader thread that dispatches each response:
- We choose every watch's ``watch_id`` (etcd >= 3.4 honours ``create_request.watch_id``; 0 means "assign one",
  so ours start at 1) and events are routed by it.
- etcd answers creations in the order it received them (one receive loop per stream), so each ``created``
  answer goes to the oldest creation still pending. That also routes a refused creation, whose answer carries
  ``watch_id`` -1, to the watch that asked.
- ``open`` returns only after etcd confirmed the watch, so a caller that re-reads afterwards cannot miss a
  change between its read and the watch.
- A response never splits a revision, so the changes of one txn or one lease expiry arrive together.

A :class:`Watch` is one caller's view: a queue of event batches that its owner iterates with a deadline.
Closing it sends a cancel on the shared stream; nothing else on the stream is disturbed.

Start revision: a watch from now is "synced" and hears an event within a millisecond. etcd's answer to a creation
carries the store's revision when the watch began (``Watch.created_at``; a watch from now hears every change after
it), so an owner whose last read is at least that recent has missed nothing and need not read again. A watch from a past
revision is served from etcd's unsynced group, which catches up only every 100 ms (mvcc syncWatchersLoop):
right for a view that must not miss history, slow for a lock handoff.

Liveness: a stopped etcd closes the socket: the reader sees it and every watch of the hub ends with
:class:`StreamBroken`, so their waiters re-read and re-watch (on a new hub, through whichever member the client
uses then). A member that goes silent without closing is noticed by whichever comes first: the client closing
the hub when a request to that member fails (for a lock waiter, usually its session's next keepalive), ``abort()``
from a session that was lost, or TCP keepalive on the socket (``_KEEPALIVE``), which is all there is when no
request fails: a bare hub, or this one connection silenced (tests/netfaults/test_silent_watch.py, ~25 s).
Keepalive catches a partition, not a paused member: a SIGSTOPped etcd's kernel still answers the probes (a bare
hub to one stayed open 45 s), so only a failing request or a lost session ends that stream.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import websocket

from lockd.errors import BackendError, BackendTimeout, ResourceExhausted
from lockd.etcd.pool import exhausted
from lockd.etcd.wire import KeyValue, b64

LOG = logging.getLogger(__name__)

# Kernel keepalive on the hub's socket: probe after 10 s of silence, every 5 s, give up after 3 misses; and data
# sent but unacknowledged for 25 s (a cancel or a create to a member cut off) drops the connection, so a sender
# cannot block on a full send buffer for the minutes of TCP's own retransmission limit.
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", 25_000))


@dataclass(frozen=True)
class Event:
    deleted: bool
    kv: KeyValue


#: Where a watch's batches (or its end) are delivered; several watches may share one.
Inbox = queue.SimpleQueue  # of list[Event] | _End


class StreamBroken(Exception):
    """The watch ended (connection closed or aborted, canceled, compacted): re-read, then watch again."""


@dataclass(frozen=True)
class _End:
    reason: str


class Watch:
    """One watch on a shared stream; iterate :meth:`batches`, interrupt with :meth:`abort`, end with :meth:`close`."""

    def __init__(self, hub: WatchHub, watch_id: int, inbox: Inbox | None = None) -> None:
        """``inbox``: shared with other watches, so one owner waits on several keys at once (their events come
        mixed, each with its key; an end of any of them ends the iteration)."""
        self.hub = hub
        self.watch_id = watch_id
        self.endpoint = hub.endpoint
        self._inbox: Inbox = inbox if inbox is not None else queue.SimpleQueue()
        self._created = threading.Event()
        self._refused: str | None = None
        #: The store's revision when etcd created this watch: a watch from now hears every change after it, so an
        #: owner that last read at this revision or later has missed nothing (0 until created, or if not told).
        self.created_at = 0

    # -- called by the hub's reader ------------------------------------------------------------------------------

    def _confirm(self, refused: str | None, revision: int = 0) -> None:
        self._refused = refused
        self.created_at = revision
        self._created.set()

    def _deliver(self, item: list[Event] | _End) -> None:
        self._inbox.put(item)

    # -- the owner's side ----------------------------------------------------------------------------------------

    def batches(self, deadline: float | None = None) -> Iterator[list[Event]]:
        """Each batch of events in revision order, until ``deadline`` (monotonic; None waits for ever).

        Returns (ends the iteration) when the deadline passes.
        Raises:
            StreamBroken: the watch ended for any other reason; nothing after the last batch was seen.
        """
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                return
            if isinstance(item, _End):
                self._inbox.put(item)  # every later read ends the same way
                raise StreamBroken(item.reason)
            yield item

    def abort(self, reason: str = "aborted") -> None:
        """End the watch from any thread: its owner's iteration ends with StreamBroken."""
        self._deliver(_End(reason))

    def close(self) -> None:
        """Cancel the watch on the stream (etcd stops sending its events; the hub sends that once) and end it."""
        self.hub.cancel(self)
        self.abort("closed")


class WatchHub:
    """One WebSocket to one member's ``/v3/watch``, carrying every watch the client opens there."""

    def __init__(self, endpoint: int, url: str, timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        """Connect to ``url`` (``ws://HOST:PORT/v3/watch`` or ``wss://``) and start the reader.

        Raises:
            ResourceExhausted: no descriptor (or memory) for the socket; the member is not to blame.
            BackendError: the member did not accept the WebSocket.
        """
        self.endpoint = endpoint
        self.url = url
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._watches: dict[int, Watch] = {}
        self._pending: deque[Watch] = deque()  # creations sent, not yet answered (etcd answers in order)
        self._mutex = threading.Lock()  # the tables above; never held while sending
        self._send_mutex = threading.Lock()  # one frame at a time on the socket, in the order creations queue
        self.closed = False
        self._reason = ""
        sockopt = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
        sockopt += [(socket.IPPROTO_TCP, getattr(socket, n), v) for n, v in _KEEPALIVE if hasattr(socket, n)]
        try:
            self._ws = websocket.create_connection(
                url,
                timeout=timeout,
                sockopt=sockopt,
                sslopt={"context": ssl_context} if ssl_context is not None else None,
                skip_utf8_validation=True,
                enable_multithread=False,  # sends are serialised by _send_mutex; the reader alone receives
            )
        except OSError as exc:
            if exhausted(exc):
                raise ResourceExhausted(f"cannot open a watch connection: {exc}") from exc
            raise BackendError(f"cannot open a watch stream: {exc}", url) from exc
        except websocket.WebSocketException as exc:
            raise BackendError(f"etcd refused the watch stream: {exc}", url) from exc
        self._ws.settimeout(None)  # the reader waits for ever; TCP keepalive and close() end the wait
        self._reader = threading.Thread(target=self._read, name=f"lockd-watch-{endpoint}", daemon=True)
        self._reader.start()

    def open(
        self,
        key: bytes,
        end: bytes | None = None,
        start_revision: int | None = None,
        filters: Sequence[str] = (),
        inbox: Inbox | None = None,
    ) -> Watch:
        """Create a watch on the stream and wait until etcd confirms it (``inbox``: see Watch).

        Raises:
            BackendTimeout: no confirmation within the request timeout (the hub is closed: a silent member).
            BackendError: the stream is closed, or etcd refused the watch.
        """
        create: dict[str, Any] = {"key": b64(key)}
        if end is not None:
            create["range_end"] = b64(end)
        if start_revision is not None:
            create["start_revision"] = str(start_revision)
        if filters:
            create["filters"] = list(filters)
        # Queued and sent under the send lock, so the queue's order is the order etcd receives them in; the tables'
        # lock is not held while sending, so the reader and close() never wait on a send to a silent member.
        with self._send_mutex:
            with self._mutex:
                if self.closed:
                    raise BackendError(f"watch stream closed: {self._reason}", self.url)
                watch = Watch(self, next(self._ids), inbox)
                create["watch_id"] = str(watch.watch_id)
                self._watches[watch.watch_id] = watch
                self._pending.append(watch)
            sent = self._send({"create_request": create})
        if not sent:
            raise BackendError(f"watch stream closed: {self._reason}", self.url)
        if not watch._created.wait(self._timeout):
            self.close(f"etcd did not confirm a watch within {self._timeout:g}s")
            raise BackendTimeout("etcd did not confirm a watch", self.url)
        if watch._refused is not None:
            self._forget(watch)
            raise BackendError(f"etcd refused a watch: {watch._refused}", self.url)
        return watch

    def cancel(self, watch: Watch) -> None:
        """Stop a watch's events (best effort: if the stream is gone, so is the watch)."""
        if self._forget(watch):
            with self._send_mutex:
                self._send({"cancel_request": {"watch_id": str(watch.watch_id)}})

    def watching(self) -> int:
        with self._mutex:
            return len(self._watches)

    def close(self, reason: str = "closed") -> None:
        """Close the socket; every watch on it ends with StreamBroken (their owners re-read and re-watch)."""
        if self.closed:
            return
        # First a shutdown of the socket: it wakes the reader and any sender stuck on a full send buffer at once.
        try:
            self._ws.abort()
        except OSError:
            pass  # not connected any more: the reader's recv has ended or ends with an error
        with self._mutex:
            if self.closed:
                return
            self.closed, self._reason = True, reason
            watches, self._watches = list(self._watches.values()), {}
            pending, self._pending = list(self._pending), deque()
        # The reader closes the socket on its way out: closing it here, under a reader still blocked in recv (a
        # green thread under eventlet stays blocked), would leave that reader on a descriptor number the next
        # socket of the process reuses, reading another connection's bytes.
        for watch in pending:
            watch._confirm(f"watch stream closed: {reason}")
        for watch in watches:
            watch.abort(reason)

    # -- internals -----------------------------------------------------------------------------------------------

    def _forget(self, watch: Watch) -> bool:
        with self._mutex:
            return self._watches.pop(watch.watch_id, None) is not None

    def _send(self, message: dict[str, Any]) -> bool:
        """Send one request (the caller holds the send lock); False (and the hub closed) if the socket failed."""
        data = json.dumps(message)
        try:
            self._ws.send(data)
            return True
        except (OSError, websocket.WebSocketException) as exc:
            threading.Thread(target=self.close, args=(f"send failed: {exc}",), daemon=True).start()
            return False

    def _read(self) -> None:
        reason = "etcd closed the watch stream"
        try:
            while not self.closed:
                message = self._ws.recv()
                if not message:
                    break
                self._dispatch(json.loads(message).get("result") or {})
        except (OSError, websocket.WebSocketException, ValueError) as exc:
            reason = f"watch stream failed: {exc}"
        except Exception:  # a bug here must end the watches, not leave their owners waiting for ever
            LOG.exception("watch stream reader failed")
            reason = "watch stream reader failed"
        finally:
            self.close(reason)
            self._ws.shutdown()  # the socket's only closer (see close); no close handshake

    def _dispatch(self, result: dict[str, Any]) -> None:
        watch_id = int(result.get("watch_id", 0))
        if result.get("created"):
            with self._mutex:
                creator = self._pending.popleft() if self._pending else None
            if creator is not None:
                refused = (result.get("cancel_reason") or "canceled") if result.get("canceled") else None
                creator._confirm(refused, int(result.get("header", {}).get("revision", 0)))
            if not result.get("events"):
                return
        with self._mutex:
            watch = self._watches.get(watch_id)
        if watch is None:
            return  # canceled by its owner; etcd may still send what it had queued
        events = result.get("events")
        if events:
            watch._deliver([Event(ev.get("type") == "DELETE", KeyValue.from_json(ev.get("kv", {}))) for ev in events])
        if result.get("canceled") or int(result.get("compact_revision", 0)):
            self._forget(watch)
            reason = result.get("cancel_reason") or f"compacted at {result.get('compact_revision')}"
            watch.abort(f"etcd ended the watch: {reason}")
