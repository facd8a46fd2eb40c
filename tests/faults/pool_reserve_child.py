"""Open a connection to etcd from a process with no descriptor left, for test_descriptor_exhaustion.py.

Usage: python -m tests.faults.pool_reserve_child HOST:PORT FALLBACK
FALLBACK: ``none`` (a plain pool), ``reserve`` (the session pool's spare descriptor), ``room`` (a plain pool
that may close an idle connection of another pool). Fills every descriptor after the pools are made, then
borrows a new connection and sends one range; prints {"ok": true} or {"error": TYPE, "message": ...}.
``client``: the same through an EtcdClient: a lease granted (the session's connection opened) and one request
(a pooled connection idle), then the session's connection is closed and every descriptor taken, as when
another thread takes the closed connection's number; then a keepalive on the lease.
"""

from __future__ import annotations

import http.client
import json
import sys

from lockd.etcd.client import EtcdClient
from lockd.etcd.pool import ConnectionPool
from lockd.options import parse_backend_url
from tests.faults.fd_exhaustion_child import fill_descriptors


def through_client(endpoint: str) -> None:
    client = EtcdClient(parse_backend_url(f"lockd+etcd3+http://{endpoint}?timeout=5"))
    lease, _ = client.lease_grant(30)
    client.get(b"/warm")
    client._upkeep.drop_member(0)  # the session's connection closed (its member restarted, say) ...
    fill_descriptors()  # ... and its descriptor number taken by someone else
    try:
        print(json.dumps({"ok": client.lease_keepalive(lease) > 0}))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))


def main(endpoint: str, fallback: str) -> None:
    if fallback == "client":
        through_client(endpoint)
        return
    host, _, port = endpoint.rpartition(":")

    def connect(member: int, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(host, int(port), timeout=timeout)

    other = ConnectionPool(1, connect)
    with other.borrow(0, 5):
        pass  # one idle connection kept in ``other``
    pool = ConnectionPool(
        1, connect, reserve=fallback == "reserve", make_room=other.shed_idle if fallback == "room" else None
    )
    fill_descriptors()
    try:
        with pool.borrow(0, 5) as conn:
            conn.request("POST", "/v3/kv/range", b'{"key": "AA=="}', {"Content-Type": "application/json"})
            conn.getresponse().read()
        print(json.dumps({"ok": True}))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
