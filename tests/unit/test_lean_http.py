"""lockd.etcd.lean_http against the standard http.client classes on the same bytes (see its module doc for why)."""

from __future__ import annotations

import http.client
import io

import pytest

from lockd.etcd.lean_http import LeanResponse
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
    assert len(_sent(http.client.HTTPConnection("127.0.0.1", 2379), b"{}")) == 2  # what LeanConnection changes
    writes = _sent(Connection("127.0.0.1", 2379), iter([b"{", b"}"]))  # an iterable body: chunked, as before
    assert len(writes) > 1 and writes[0].startswith(b"POST ")


class _Answer:
    """Stands in for the socket a response reads from: canned bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.data))  # type: ignore[arg-type]


_GO = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nGrpc-Metadata-Content-Type: application/grpc\r\n"
ANSWERS = {
    "etcd's usual answer": _GO
    + b"Date: Mon, 07 Dec 2026 18:00:00 GMT\r\nContent-Length: 18\r\n\r\n"
    + b'{"succeeded":true}',
    "chunked (a long range)": _GO + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"kvs\r\n4\r\n":[]\r\n1\r\n}\r\n0\r\n\r\n',
    "the member closes after it": b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
    + b"Content-Length: 2\r\n\r\n{}",
    "no framing at all": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    "an interim 100 first": b"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\n" + _GO + b"Content-Length: 2\r\n\r\n{}",
    "a header sent twice, names in any case": _GO + b"x-dup: a\r\nX-Dup: b\r\ncontent-LENGTH: 2\r\n\r\n{}",
    "no content": b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
}


def _read(cls: type[http.client.HTTPResponse], data: bytes) -> dict[str, object]:
    response = cls(_Answer(data), method="POST")  # type: ignore[arg-type]
    response.begin()
    seen = {
        attr: getattr(response, attr) for attr in ("status", "reason", "version", "chunked", "length", "will_close")
    }
    seen["headers"] = {name: response.getheader(name) for name in ("content-type", "X-Dup", "Content-Length", "nope")}
    seen["all x-dup"] = response.headers.get_all("x-dup")
    seen["body"] = response.read()
    return seen


@pytest.mark.parametrize("case", sorted(ANSWERS))
def test_the_lean_response_reads_what_the_standard_one_reads(case: str) -> None:
    lean, standard = _read(LeanResponse, ANSWERS[case]), _read(http.client.HTTPResponse, ANSWERS[case])
    assert lean == standard
    assert lean["body"] or lean["status"] == 204


def test_lockd_connections_read_with_the_lean_response() -> None:
    assert Connection("127.0.0.1", 2379).response_class is LeanResponse
    assert http.client.HTTPConnection.response_class is http.client.HTTPResponse  # nothing else changed
