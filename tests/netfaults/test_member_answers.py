"""A leaderless member (cut off from both peers, clients still reach it) sends lockd's client elsewhere.

etcd answers a request it cannot commit only after its own request timeout (5 s + two election timeouts): with
``503 code 14 "etcdserver: request timed out"``, or, for a lease grant (3.4) and for txns too (3.5), with
``500 code 2 "context deadline exceeded"``. Before lockd.etcd.answers the second was taken for a refusal and
raised out of the call (EtcdRequestError) instead of failing over: a client with a request timeout longer than
etcd's own (as an operator sets one for a slow disk) could not take a lock while any member it listed first was
in the minority. The client here waits 10 s per request, so etcd's answer, not the client's timeout, decides.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockd.errors import LockdError
from lockd.etcd.client import EtcdClient, op_put
from lockd.options import parse_backend_url
from tests.etcd_cluster import EtcdCluster
from tests.etcd_process import etcd_35_binary, etcd_binary
from tests.netfaults.conftest import require_netns
from tests.netns import TestNetwork
from tests.procs import wait_for

MEMBERS = ("e0", "e1", "e2")
VERSIONS = {"3.4": etcd_binary, "3.5": etcd_35_binary}


@pytest.fixture(params=sorted(VERSIONS))
def hosts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestNetwork, EtcdCluster]]:
    require_netns()
    network = TestNetwork(MEMBERS).create()
    try:
        placements = [(network.hosts[m].ip, network.hosts[m].argv()) for m in MEMBERS]
        cluster = EtcdCluster(tmp_path / "etcd", placements=placements)
        for member in cluster.members:
            member.binary = VERSIONS[request.param]()
        try:
            cluster.start()
            yield network, cluster
        finally:
            cluster.stop()
    finally:
        network.close()


def test_leaderless_member_is_failed_over(hosts: tuple[TestNetwork, EtcdCluster]) -> None:
    network, cluster = hosts
    leader = cluster.wait_for_leader()
    minority = next(m for m in cluster.members if m is not leader)
    name = MEMBERS[cluster.members.index(minority)]
    client = EtcdClient(parse_backend_url(cluster.url(minority, timeout=10)))
    try:
        client.range(b"/warm")
        network.cut(name, [m for m in MEMBERS if m != name])
        # Leaderless, not merely partitioned: until its election timeout the member still follows the old
        # leader and answers 503 "request timed out", which lockd always failed over on.
        wait_for(lambda: str(cluster.status(minority).get("leader", "0")) == "0", 10, "the member to lose its leader")
        started = time.monotonic()
        try:
            lease, _ = client.lease_grant(5)
            client.txn([], [op_put(b"/leaderless", b"x", lease)])
        except LockdError as exc:
            pytest.fail(f"a leaderless member's answer was raised instead of failed over: {exc}")
        took = time.monotonic() - started
        assert client.endpoint_name() != f"http://{minority.endpoint}"
        assert client.get(b"/leaderless") is not None
    finally:
        client.close()
        network.heal()
    # The member answered (after etcd's own timeout), rather than the client timing out on it.
    print(f"\nleaderless {minority.binary}: failed over after {took:.1f}s")
    assert took < 10, "the client's timeout, not the member's answer, moved it"
