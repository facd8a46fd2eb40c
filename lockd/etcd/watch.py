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

A :class:`Watch` is one caller's view: a queue of event batches that its owner iterates with a deadline (or its
owner's own :class:`Inbox`, whose ``put`` runs on the reader thread: lockd.api.view's keeps the batches itself).
Closing it forgets the watch at once (its events are dropped from then on) and cancels it on the shared stream
with the hub's next creation, or once ``_CANCELS_AT_ONCE`` are due: a lock waiter closes its two watches on the
handoff's critical path, between the grant's event and ``acquire()`` returning, and two frames sent there were a
tenth of a handoff (bench/handoff_breakdown.py). etcd keeps a cancelled-to-be watch meanwhile; it is on a key
that went or on a waiter's own entry, and hears next to nothing. Nothing else on the stream is disturbed.

Reading: websocket-client opens the connection (handshake, TLS, socket options) and sends; the reader parses
the frames etcd sends off that socket itself, taking whatever has arrived in one ``recv``. websocket-client's
own ``recv`` costs three system calls per frame (header, length, payload) and most of the sidecar's CPU under
load goes to following its watch (bench/serve_cpu.py). The server's frames are unmasked; a ping is answered
with a pong under the send lock; a close frame ends the stream as EOF does (no close handshake: see close).
The reader decodes a message's JSON to route it, and leaves each event's key-value record to whoever reads it
(:class:`Event`): under load the reader wakes for every message, and each of its instructions costs several
times what it does in a warm loop.

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
from typing import Any, Protocol

import websocket

from lockd.errors import BackendError, BackendTimeout, ResourceExhausted
from lockd.etcd.pool import exhausted
from lockd.etcd.wire import KeyValue, b64

LOG = logging.getLogger(__name__)

# Kernel keepalive on the hub's socket: probe after 10 s of silence, every 5 s, give up after 3 misses; and data
# sent but unacknowledged for 25 s (a cancel or a create to a member cut off) drops the connection, so a sender
# cannot block on a full send buffer for the minutes of TCP's own retransmission limit.
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", 25_000))
#: Cancels wait for the hub's next creation, unless this many are due (what etcd keeps for closed watches).
_CANCELS_AT_ONCE = 16

# WebSocket opcodes (RFC 6455 section 5.2) and the reader's read size: one recv takes every frame that arrived.
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_READ_SIZE = 65536
#: json.loads without its per-call checks (the reader decodes every message etcd sends; they are UTF-8 JSON).
_decode = json.JSONDecoder().decode


class Event:
    """One change of a key: ``deleted`` (else a put) and its record, ``kv``.

    From the hub, ``kv`` is decoded from the gateway's JSON when first read, by the thread that reads it: the
    reader only routes, and a consumer that takes its events in batches (the sidecar's view) decodes them
    there, not in a wake-up per event (see "Reading" above). Decoding twice from two threads is harmless; a
    malformed record (etcd sends none) raises ValueError there rather than ending the stream.
    """

    __slots__ = ("deleted", "_kv", "_json")

    def __init__(self, deleted: bool, kv: KeyValue | None = None, json_kv: dict[str, Any] | None = None) -> None:
        """Either ``kv``, or ``json_kv``: the event's ``kv`` object as the gateway sent it."""
        self.deleted = deleted
        self._kv = kv
        self._json = json_kv

    @property
    def kv(self) -> KeyValue:
        kv = self._kv
        if kv is None:
            kv = self._kv = KeyValue.from_json(self._json or {})
        return kv

    def __repr__(self) -> str:
        return f"Event(deleted={self.deleted!r}, kv={self.kv!r})"


@dataclass(frozen=True)
class End:
    """The end of a watch, as its inbox receives it (after its last batch)."""

    reason: str


class Inbox(Protocol):
    """Where a watch's batches (or its end) are delivered; several watches may share one. A ``queue.SimpleQueue``,
    or an owner's object whose ``put`` runs on the hub's reader thread (it must be quick: every watch of the hub
    waits meanwhile) and whose ``get`` gives its owner's iteration what it should see (lockd.api.view's gives
    one empty batch per wake-up, and the end)."""

    def put(self, item: list[Event] | End) -> None: ...

    def get(self, *, timeout: float | None = None) -> list[Event] | End:
        """The next item; raises queue.Empty when none came within ``timeout``."""
        ...


class StreamBroken(Exception):
    """The watch ended (connection closed or aborted, canceled, compacted): re-read, then watch again."""


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

    def _deliver(self, item: list[Event] | End) -> None:
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
            if isinstance(item, End):
                self._inbox.put(item)  # every later read ends the same way
                raise StreamBroken(item.reason)
            yield item

    def abort(self, reason: str = "aborted") -> None:
        """End the watch from any thread: its owner's iteration ends with StreamBroken."""
        self._deliver(End(reason))

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
        self._cancels: list[int] = []  # watches forgotten, their cancels not sent yet (see cancel)
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
            self._send_cancels()
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
        """Stop a watch's events: dropped from now, cancelled at etcd soon (see the module doc; best effort: if
        the stream is gone, so is the watch)."""
        with self._mutex:
            if self._watches.pop(watch.watch_id, None) is None:
                return
            self._cancels.append(watch.watch_id)
            due = len(self._cancels) >= _CANCELS_AT_ONCE
        if due:
            with self._send_mutex:
                self._send_cancels()

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

    def _send_cancels(self) -> None:
        """Send the cancels that are due (the caller holds the send lock)."""
        with self._mutex:
            due, self._cancels = self._cancels, []
        for watch_id in due:
            if not self._send({"cancel_request": {"watch_id": str(watch_id)}}):
                return

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
            for message in self._messages():
                if self.closed:
                    break
                self._dispatch(_decode(message.decode()).get("result") or {})
        except (OSError, websocket.WebSocketException, ValueError) as exc:
            reason = f"watch stream failed: {exc}"
        except Exception:  # a bug here must end the watches, not leave their owners waiting for ever
            LOG.exception("watch stream reader failed")
            reason = "watch stream reader failed"
        finally:
            self.close(reason)
            self._ws.shutdown()  # the socket's only closer (see close); no close handshake

    def _messages(self) -> Iterator[bytes]:
        """Each message etcd sends, parsed off the socket websocket-client connected (see "Reading" above).

        Ends when etcd closes the stream (EOF or a close frame). Raises OSError when the socket fails and
        ValueError on a frame a server must not send (masked, or of an unknown opcode).
        """
        sock = self._ws.sock
        buf = bytearray()
        start = 0  # the first byte of buf not parsed yet
        fragments: list[bytes] = []  # of a message sent in several frames (continuations)
        while True:
            available = len(buf) - start
            if available >= 2:
                first, second = buf[start], buf[start + 1]
                length, head = second & 0x7F, 2
                if second & 0x80:
                    raise ValueError("a masked frame from the server")
                if length == 126:
                    head = 4
                    length = int.from_bytes(buf[start + 2 : start + 4], "big") if available >= 4 else -1
                elif length == 127:
                    head = 10
                    length = int.from_bytes(buf[start + 2 : start + 10], "big") if available >= 10 else -1
                if length >= 0 and available >= head + length:
                    payload = bytes(buf[start + head : start + head + length])
                    start += head + length
                    opcode, fin = first & 0x0F, first & 0x80
                    if opcode in (_TEXT, _BINARY, _CONTINUATION):
                        if opcode != _CONTINUATION:
                            fragments.clear()
                        if fin and not fragments:
                            yield payload
                        else:
                            fragments.append(payload)
                            if fin:
                                yield b"".join(fragments)
                                fragments.clear()
                    elif opcode == _PING:
                        with self._send_mutex:
                            self._ws.pong(payload)
                    elif opcode == _CLOSE:
                        return
                    elif opcode != _PONG:
                        raise ValueError(f"a WebSocket frame of unknown opcode {opcode}")
                    continue
            if start:
                del buf[:start]
                start = 0
            chunk = sock.recv(_READ_SIZE)
            if not chunk:
                return
            buf += chunk

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
            watch._deliver([Event(ev.get("type") == "DELETE", json_kv=ev.get("kv")) for ev in events])
        if result.get("canceled") or int(result.get("compact_revision", 0)):
            self._forget(watch)
            reason = result.get("cancel_reason") or f"compacted at {result.get('compact_revision')}"
            watch.abort(f"etcd ended the watch: {reason}")
