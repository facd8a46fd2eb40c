"""Fault-test fixtures: one three-member etcd cluster for the faults session, healed before and after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.etcd_cluster import EtcdCluster
from tests.procs import WorkerProcess


@pytest.fixture(scope="session")
def etcd_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("cluster"))
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
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes a test starts (append them); all are killed and reaped at the end."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()
