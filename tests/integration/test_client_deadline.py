"""A request given a deadline that has passed is not sent, and says nothing against the member (lockd.etcd.client).

The netns test (tests/netfaults/test_timed_acquire_cut_off.py) shows what this is for: a timed acquire that ends
by its deadline while etcd is unreachable. Here, on a healthy etcd, the rule itself: nothing is written, the client
stays on its member, and a deadline still ahead changes nothing.
"""

from __future__ import annotations

import time

import pytest

from lockd.errors import BackendTimeout, DeadlineExceeded
from lockd.etcd.client import EtcdClient, op_put
from lockd.options import parse_backend_url


def test_a_passed_deadline_sends_nothing_and_keeps_the_member(etcd_url: str, lock_name: str) -> None:
    # Two endpoints, one member under two names: a failover would show as a move to the second.
    options = parse_backend_url(etcd_url)
    (host, port), *_ = options.endpoints
    client = EtcdClient(parse_backend_url(f"lockd+etcd3+http://{host}:{port}?endpoints=localhost:{port}&timeout=2"))
    assert len(client.options.endpoints) == 2
    try:
        key = f"/lockd-test/{lock_name}".encode()
        before = client.range(key)[1]
        with pytest.raises(DeadlineExceeded) as caught:
            client.txn([], [op_put(key, b"late")], deadline=time.monotonic() - 0.001)
        assert isinstance(caught.value, BackendTimeout)  # callers that handle timeouts handle this too
        assert client.get(key) is None and client.range(key)[1] == before  # nothing written, no revision spent
        assert client.endpoint_name() == client.endpoint_name(0)  # no failover

        client.txn([], [op_put(key, b"in time")], deadline=time.monotonic() + 5)
        assert client.get(key, deadline=time.monotonic() + 5).value == b"in time"
        client.delete(key)
    finally:
        client.close()
