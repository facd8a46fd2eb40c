"""etcd's JSON gateway spoken plainly, for the floors and controls the benchmarks set lockd against.

One kept-alive ``http.client`` connection, as a careful client without lockd's transport would keep: the
floors (``bench/txn_shapes.py``, ``bench/grant_shape.py``, the status scenario's one-txn floor) and etcd's own
Mutex algorithm (``lockd.bench.etcd_mutex``) send their requests through it, so what they measure is etcd's and
the gateway's cost with nothing of lockd in between.
"""

from __future__ import annotations

import http.client
import json
from typing import Any


class GatewayError(RuntimeError):
    """etcd's gateway answered something other than 200 (or a control's own protocol failed: etcd_mutex)."""


class Gateway:
    """POSTs JSON to ``/v3/<path>`` on one kept-alive connection to ``HOST:PORT`` (one thread at a time)."""

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        host, _, port = endpoint.rpartition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The decoded answer. Raises GatewayError for an answer other than 200 (OSError, HTTPException: the
        connection failed)."""
        self.conn.request("POST", "/v3/" + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise GatewayError(f"etcd answered {response.status} to /v3/{path}: {data[:200]!r}")
        return json.loads(data)

    def close(self) -> None:
        self.conn.close()
