"""Two read-only questions the bench asks etcd directly: which leases exist, and which version it runs."""

from __future__ import annotations

import http.client
import json


def _post(endpoint: str, path: str, body: dict) -> dict:
    host, _, port = endpoint.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read() or b"{}")
    finally:
        conn.close()


def lease_ids(endpoint: str) -> set[int]:
    """IDs of the live leases on the cluster (``/v3/lease/leases``), whoever owns them.

    Scenarios count the IDs that are new since they started: a plain difference of counts goes wrong when
    leases leaked by an earlier scenario (stock tooz's) expire in the meantime.
    """
    return {int(item["ID"]) for item in _post(endpoint, "/v3/lease/leases", {}).get("leases", [])}


def server_version(endpoint: str) -> str:
    """The etcd server version the endpoint reports, or ``unknown``."""
    host, _, port = endpoint.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/version")
        return str(json.loads(conn.getresponse().read()).get("etcdserver", "unknown"))
    except (OSError, ValueError):
        return "unknown"
    finally:
        conn.close()
