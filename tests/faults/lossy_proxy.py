"""A loopback TCP proxy in front of one etcd member that can lose the answer to one chosen request.

This makes an *ambiguous* write deterministic: the request reaches etcd and commits, etcd answers, and the
proxy drops the answer. ``hang`` keeps the client's connection open and silent (the client times out, as with
a server slower than the client's timeout); ``reset`` closes it with a TCP reset (the client sees the
connection die after sending). The lost answers are kept so a test can check that the write did commit.
``stall_next`` instead holds back every answer on every connection for a while once the chosen request has gone
upstream, then delivers them all: the client sees what a process frozen right after sending would see.
Everything else is forwarded byte for byte, streaming watches included. ``cut`` resets every connection and
refuses new ones until ``open``: a network cut that both ends notice at once.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time


class LossyProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._path = b""
        self._mode = "hang"
        self._stall = 0.0  # seconds to hold answers back once the marked request is seen (stall_next)
        self._stalled_until = 0.0  # monotonic
        self.lost: list[dict[str, object]] = []  # decoded etcd answers the client never saw
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._refusing = False  # cut: new connections are reset at once
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def lose_next(self, path: str, marker: bytes, mode: str = "hang") -> None:
        """Lose the answer to the next ``POST /v3/<path>`` whose body contains ``marker`` (once)."""
        assert mode in ("hang", "reset")
        with self._lock:
            self._path, self._marker, self._mode = f"POST /v3/{path} ".encode(), marker, mode

    def stall_next(self, path: str, marker: bytes, seconds: float) -> None:
        """After the next ``POST /v3/<path>`` whose body contains ``marker``, hold every answer (on all
        connections, keepalives included) for ``seconds``, then deliver them in order (once)."""
        with self._lock:
            self._path, self._marker, self._mode, self._stall = f"POST /v3/{path} ".encode(), marker, "stall", seconds

    def cut(self) -> None:
        """Reset every connection through the proxy and refuse new ones until open()."""
        with self._lock:
            self._refusing = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _reset(sock)

    def open(self) -> None:
        with self._lock:
            self._refusing = False

    def _claim(self, request: bytes) -> str | None:
        with self._lock:
            if self._marker is not None and request.startswith(self._path) and self._marker in request:
                self._marker = None
                if self._mode == "stall":
                    self._stalled_until = time.monotonic() + self._stall
                    return None
                return self._mode
        return None

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            losing = threading.Event()
            modes: list[str] = []
            threading.Thread(target=self._requests, args=(client, upstream, losing, modes), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client, losing, modes), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, losing: threading.Event, modes: list) -> None:
        pending = b""  # the request being received: headers and body may come in separate segments
        try:
            while data := client.recv(65536):
                pending += data
                while (size := _complete_request(pending)) is not None:
                    # Decided before the request's last bytes go upstream, so before etcd can answer it.
                    mode = self._claim(pending[:size])
                    if mode is not None:
                        modes.append(mode)
                        losing.set()
                    pending = pending[size:]
                upstream.sendall(data)
        except OSError:
            pass
        self._close(upstream)
        self._close(client)

    def _answers(self, upstream: socket.socket, client: socket.socket, losing: threading.Event, modes: list) -> None:
        buffered = b""
        try:
            while data := upstream.recv(65536):
                if not losing.is_set():
                    time.sleep(max(0.0, self._stalled_until - time.monotonic()))
                    client.sendall(data)
                    continue
                buffered += data
                answer = _complete_body(buffered)
                if answer is None:
                    continue
                with self._lock:
                    self.lost.append(json.loads(answer))
                if modes[-1] == "reset":
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self._close(client)
                    break
                # hang: say nothing more on this connection; the client times out and closes it.
        except OSError:
            pass
        self._close(upstream)

    def lost_txn_revision(self) -> int:
        """The revision of the one lost txn answer, after checking the fault was injected and the txn did commit
        (its compares held: it took, released or broke what it meant to)."""
        assert len(self.lost) == 1, "the fault was not injected"
        answer = self.lost[0]
        assert answer.get("succeeded") is True, f"the lost txn did not commit its success branch: {answer}"
        return int(answer["header"]["revision"])  # type: ignore[index]

    @staticmethod
    def _close(sock: socket.socket) -> None:
        try:
            sock.close()
        except OSError:
            pass

    def close(self) -> None:
        self._closed = True
        self._close(self._listener)
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Shut a socket down (its peer and any thread blocked on it notice at once), then close it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _complete_body(response: bytes) -> bytes | None:
    """The body of a complete HTTP response with Content-Length, or None while more bytes are due."""
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
            return body[:length] if len(body) >= length else None
    raise AssertionError(f"etcd answered without Content-Length: {head!r}")


def _complete_request(data: bytes) -> int | None:
    """The length of the first complete HTTP request in ``data`` (Content-Length body), or None."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    size = len(head) + len(sep) + length
    return size if len(data) >= size else None
