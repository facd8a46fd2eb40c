"""``lockd+etcd3+https``: requests, the session's keepalive and the shared watch stream (a WebSocket over TLS,
``wss://``) against an etcd that serves clients only over TLS and demands a client certificate (tests.tls_etcd).

A waiter must be handed the lock through a watch: if the watch stream could not be opened over TLS, the
waiter's acquire would fail, or wait for a lock that was released long ago.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tooz.coordination

from tests.pki import Authority, bundle
from tests.procs import wait_for
from tests.tls_etcd import ClientFiles, ServerFiles, TLSEtcdMember

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates")


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[str]:
    ca = Authority(tmp_path / "pki", "ca")
    client = ClientFiles.under(tmp_path / "client")
    client.install(bundle(ca), ca.issue("client", server=False))
    member = TLSEtcdMember("tls", tmp_path / "data", ServerFiles.under(tmp_path / "tls"), client)
    member.files.install(bundle(ca), ca.issue("tls", server=True))
    member.start()
    try:
        yield f"lockd+etcd3+https://{member.endpoint}?lease_ttl=3&timeout=2&{client.query()}"
    finally:
        member.stop()


def test_a_waiter_is_handed_the_lock_over_tls(tls_url: str, lock_name: str) -> None:
    holder = tooz.coordination.get_coordinator(tls_url, b"tls-holder")
    waiter = tooz.coordination.get_coordinator(tls_url, b"tls-waiter")
    holder.start(start_heart=True)
    waiter.start(start_heart=True)
    try:
        held = holder.get_lock(lock_name)
        assert held.acquire()
        wanted = waiter.get_lock(lock_name)
        got: list[bool] = []
        thread = threading.Thread(target=lambda: got.append(wanted.acquire(blocking=20)))
        thread.start()
        wait_for(lambda: waiter.etcd.connections() >= 3, 10, "the waiter's watch stream and requests")
        assert not got, "the waiter got a held lock"
        first = held.token
        assert held.release()
        thread.join(25)
        assert got == [True] and wanted.token > first
        assert wanted.release()
    finally:
        holder.stop()
        waiter.stop()
