"""lockd.etcd.pool.Connection writes a request's head and body in one send (see OneSend for why)."""

from __future__ import annotations

import http.client

from lockd.etcd.pool import Connection


class _Wire:
    """Stands in for the socket: records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def _sent(conn: http.client.HTTPConnection, body: object) -> list[bytes]:
    wire = _Wire()
    conn.sock = wire  # type: ignore[assignment]
    conn.request("POST", "/v3/kv/txn", body, {"Content-Type": "application/json"})
    return wire.writes


def test_head_and_body_go_in_one_write() -> None:
    (write,) = _sent(Connection("127.0.0.1", 2379), b'{"compare":[]}')
    head, body = write.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /v3/kv/txn HTTP/1.1") and b"Content-Length: 14" in head
    assert body == b'{"compare":[]}'


def test_the_standard_connection_writes_twice_and_other_bodies_go_its_way() -> None:
    assert len(_sent(http.client.HTTPConnection("127.0.0.1", 2379), b"{}")) == 2  # what OneSend changes
    writes = _sent(Connection("127.0.0.1", 2379), iter([b"{", b"}"]))  # an iterable body: chunked, as before
    assert len(writes) > 1 and writes[0].startswith(b"POST ")
