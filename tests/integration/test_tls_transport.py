"""``lockd+etcd3+https``: requests, the session's keepalive and the shared watch stream (a WebSocket over TLS,
``wss://``) against an etcd that serves clients only over TLS, with a self-signed certificate for 127.0.0.1.

A waiter must be handed the lock through a watch: if the watch stream could not be opened over TLS, the
waiter's acquire would fail, or wait for a lock that was released long ago.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tooz.coordination

from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url
from tests.etcd_process import etcd_binary, free_port
from tests.procs import wait_for

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port, peer = free_port(), free_port()
    log = open(tmp_path / "etcd.log", "wb")
    proc = subprocess.Popen(
        [etcd_binary(), "--name", "tls", "--data-dir", str(tmp_path / "data"),
         "--listen-client-urls", f"https://127.0.0.1:{port}", "--advertise-client-urls", f"https://127.0.0.1:{port}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"tls=http://127.0.0.1:{peer}", "--cert-file", str(cert), "--key-file", str(key),
         "--log-level", "warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"lockd+etcd3+https://127.0.0.1:{port}?ca_cert={cert}&lease_ttl=3&timeout=2"
    client = EtcdClient(parse_backend_url(url))

    def ready() -> bool:
        try:
            return bool(client.cluster_status())
        except Exception:
            return False

    try:
        wait_for(ready, 20, "etcd over TLS")
        yield url
    finally:
        client.close()
        proc.kill()
        proc.wait(10)
        log.close()


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
