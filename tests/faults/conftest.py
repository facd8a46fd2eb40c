"""Fault-test fixtures: one three-member etcd cluster for the faults session, healed before and after each test;
a proxy that loses chosen answers, and a client that sees what etcd really stores."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import tooz.coordination

from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url
from tests.etcd_cluster import EtcdCluster
from tests.etcd_process import EtcdMember
from tests.faults.lossy_proxy import LossyProxy


@pytest.fixture(scope="session")
def etcd_cluster_session(tmp_path_factory: pytest.TempPathFactory, etcd_binary_path: str) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("cluster"), binary=etcd_binary_path)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(etcd_cluster_session: EtcdCluster) -> Iterator[EtcdCluster]:
    """The shared cluster with all three members up and one leader; whatever the test broke is healed after."""
    etcd_cluster_session.heal()
    yield etcd_cluster_session
    etcd_cluster_session.heal()


@pytest.fixture
def proxy(etcd: EtcdMember) -> Iterator[LossyProxy]:
    """A LossyProxy in front of the session etcd."""
    p = LossyProxy(etcd.client_port)
    yield p
    p.close()


@pytest.fixture
def direct(etcd: EtcdMember) -> Iterator[EtcdClient]:
    """A client straight to etcd, to see what is really stored."""
    client = EtcdClient(parse_backend_url(f"lockd+etcd3+http://{etcd.endpoint}?timeout=5"))
    yield client
    client.close()


@pytest.fixture
def coordinator_via() -> Iterator[Callable[[str], tooz.coordination.CoordinationDriver]]:
    """Start a coordinator (with its heartbeat) on a given URL; whatever the test did not stop is stopped after."""
    started: list[tooz.coordination.CoordinationDriver] = []

    def start(url: str) -> tooz.coordination.CoordinationDriver:
        coord = tooz.coordination.get_coordinator(url, f"fault-{uuid.uuid4().hex[:6]}".encode())
        coord.start(start_heart=True)
        started.append(coord)
        return coord

    yield start
    for coord in started:
        if coord.is_started:
            coord.stop()
