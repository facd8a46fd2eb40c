"""lockd.etcd.answers on the answers members really gave (tests/faults/test_member_answers.py makes them live)."""

from __future__ import annotations

import pytest

from lockd.etcd.answers import Answer, classify, decode

SEEN = [
    # stopping 3.4: the gateway's connection to its member is closing (Canceled, as 408)
    (
        408,
        b'{"error":"grpc: the client connection is closing","message":"grpc: the client connection is closing",'
        b'"code":1}',
    ),
    (503, b'{"error":"transport is closing","message":"transport is closing","code":14}'),
    # stopping 3.5
    (503, b'{"error":"error reading from server: EOF","code":14,"message":"error reading from server: EOF"}'),
    # leaderless, 3.4 and 3.5
    (503, b'{"error":"etcdserver: request timed out","message":"etcdserver: request timed out","code":14}'),
    (500, b'{"error":"context deadline exceeded","message":"context deadline exceeded","code":2}'),
    # leaderless, the streaming keepalive's shape; and the same in a 200 once a stream has started
    (
        503,
        b'{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service '
        b'Unavailable"}}',
    ),
    (200, b'{"error":{"grpc_code":1,"http_code":408,"message":"grpc: the client connection is closing"}}'),
    # stopping 3.4 serving clients over TLS: the gateway's TLS stream to its member cut mid-answer (Internal)
    (
        500,
        b'{"error":"server closed the stream without sending trailers","message":"server closed the stream without '
        b'sending trailers","code":13}',
    ),
    # learner
    (
        503,
        b'{"error":"etcdserver: rpc not supported for learner","code":14,"message":"etcdserver: rpc not '
        b'supported for learner"}',
    ),
    # one member's apply backlog
    (429, b'{"error":"etcdserver: too many requests","code":8,"message":"etcdserver: too many requests"}'),
    # not the gateway: a proxy's page, etcd without the gateway
    (502, b"<html>bad gateway</html>"),
    (404, b"404 page not found"),
]

REFUSALS = [
    (
        400,
        b'{"error":"etcdserver: duplicate key given in txn request","code":3,"message":"etcdserver: duplicate key'
        b' given in txn request"}',
    ),
    (
        404,
        b'{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}',
    ),
    (
        400,
        b'{"error":"etcdserver: mvcc: required revision has been compacted","code":11,"message":"etcdserver: '
        b'mvcc: required revision has been compacted"}',
    ),
    (
        429,
        b'{"error":"etcdserver: mvcc: database space exceeded","code":8,"message":"etcdserver: mvcc: database '
        b'space exceeded"}',
    ),
    (200, b'{"error":{"grpc_code":5,"http_code":404,"message":"etcdserver: requested lease not found"}}'),
    (401, b'{"error":"etcdserver: user name is empty","code":16,"message":"etcdserver: user name is empty"}'),
]


@pytest.mark.parametrize(("status", "data"), SEEN)
def test_a_member_that_cannot_serve_now_sends_the_client_elsewhere(status: int, data: bytes) -> None:
    assert classify(status, decode(data)) is Answer.ELSEWHERE


@pytest.mark.parametrize(("status", "data"), REFUSALS)
def test_what_every_member_would_refuse_is_a_refusal(status: int, data: bytes) -> None:
    assert classify(status, decode(data)) is Answer.REFUSED


def test_served() -> None:
    assert classify(200, decode(b'{"header":{"revision":"3"}}')) is Answer.SERVED
    assert classify(200, decode(b"")) is Answer.SERVED
    assert classify(200, decode(b"[1]")) is Answer.ELSEWHERE  # not the gateway's shape
