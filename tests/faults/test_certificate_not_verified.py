"""A client whose CA file does not verify etcd's certificate gets an error naming that file, in bounded time.

The mistake behind it in a renewal: etcd restarted with a server certificate from a new CA on a host whose
``ca_cert`` file still holds only the old CA (step 1 of docs/operations.md#renew-certificates skipped there).

1. A waiter blocked in ``acquire()`` (untimed) ends with a BackendError naming its CA file (``option`` says
   ``ca_cert``) within seconds of etcd's restart, while its session lease (30 s) is still valid: it is the
   certificate that ended the wait, not the lease. A holder on a host that did update its file keeps its lock,
   and a new client with the stale file fails in ``start()`` with the same error.
2. `lockd serve` with such a file keeps serving; /readyz is 503 and its reason names the CA file, and nothing of
   the client key or the admin token.

Why these fail without the mechanism: a certificate that does not verify is an OSError to the client, handled
as an unreachable member: the waiter retries while its session lives (the full 30 s, then a generic error), and
the error text is OpenSSL's ("unable to get local issuer certificate"), which names no file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import tooz.coordination

from lockd.errors import BackendError
from tests.etcd_process import free_port, queue_entries
from tests.pki import Authority, bundle
from tests.procs import wait_for
from tests.tls_etcd import ClientFiles, ServerFiles, TLSEtcdMember

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates"),
]

#: Longer than the test: only the certificate can end the waiter's wait in time.
LEASE_TTL = 30
#: From etcd's restart to the waiter's error: reconnecting and one handshake, with room for a slow machine.
BOUND = 10.0


def _member(tmp_path: Path, server_ca: Authority, trusted: bytes, probe: ClientFiles) -> TLSEtcdMember:
    member = TLSEtcdMember("solo", tmp_path / "etcd" / "data", ServerFiles.under(tmp_path / "etcd" / "tls"), probe)
    member.files.install(trusted, server_ca.issue("solo", server=True))
    member.start()
    return member


def test_blocking_acquire_ends_with_an_error_naming_the_ca_file(tmp_path: Path, lock_name: str) -> None:
    old, new = Authority(tmp_path / "pki", "old"), Authority(tmp_path / "pki", "new")
    updated = ClientFiles.under(tmp_path / "updated-host")
    updated.install(bundle(old), old.issue("updated", server=False))
    stale = ClientFiles.under(tmp_path / "stale-host")  # trusts the old CA only, and is never updated
    stale.install(bundle(old), old.issue("stale", server=False))
    member = _member(tmp_path, old, bundle(old, new), updated)  # both client certificates are accepted throughout
    query = f"lease_ttl={LEASE_TTL}&timeout=2"
    updated_url = f"lockd+etcd3+https://{member.endpoint}?{query}&{updated.query()}"
    stale_url = f"lockd+etcd3+https://{member.endpoint}?{query}&{stale.query()}"
    holder = tooz.coordination.get_coordinator(updated_url, b"verify-holder")
    waiter = tooz.coordination.get_coordinator(stale_url, b"verify-waiter")
    holder.start(start_heart=True)
    waiter.start(start_heart=True)
    outcome: list[object] = []
    ended = threading.Event()
    try:
        held = holder.get_lock(lock_name.encode())
        assert held.acquire()

        def wait() -> None:
            try:
                outcome.append(waiter.get_lock(lock_name.encode()).acquire(blocking=True))
            except Exception as exc:
                outcome.append(exc)
            ended.set()

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        wait_for(lambda: len(queue_entries(updated_url, lock_name)) == 1, 10, "the waiter to queue")

        updated.install(ca_bundle=bundle(old, new))
        member.files.install(issued=new.issue("solo", server=True))
        member.restart()
        restarted = time.monotonic()
        assert ended.wait(BOUND + LEASE_TTL), "the blocking acquire never ended"
        took = time.monotonic() - restarted
        (error,) = outcome
        assert isinstance(error, BackendError), f"acquire returned {error!r}"
        assert str(stale.ca) in str(error) and getattr(error, "option", None) == "ca_cert", str(error)
        assert took < BOUND, f"the waiter took {took:.1f}s to report the certificate (retried meanwhile?)"
        print(f"\nwaiter's error {took:.2f}s after the restart: {error}")

        assert held.is_still_owner(), "the holder on updated files lost its lock"  # type: ignore[attr-defined]

        fresh = tooz.coordination.get_coordinator(stale_url, b"verify-fresh")
        started = time.monotonic()
        with pytest.raises(BackendError) as raised:
            fresh.start()
        assert str(stale.ca) in str(raised.value) and time.monotonic() - started < BOUND
        assert held.release()
    finally:
        for coord in (holder, waiter):
            try:
                coord.stop()
            except Exception:
                pass
        member.stop()


def test_lockd_serve_readyz_names_the_ca_file_and_no_secret(tmp_path: Path) -> None:
    ours, other = Authority(tmp_path / "pki", "ours"), Authority(tmp_path / "pki", "other")
    good = ClientFiles.under(tmp_path / "good")
    good.install(bundle(ours), ours.issue("probe", server=False))
    member = _member(tmp_path, ours, bundle(ours), good)
    wrong = ClientFiles.under(tmp_path / "serve-host")  # a valid client certificate, but a CA that is not etcd's
    wrong.install(bundle(other), ours.issue("serve", server=False))
    url = f"lockd+etcd3+https://{member.endpoint}?timeout=2&{wrong.query()}"
    state = tmp_path / "serve-state"
    state.mkdir()
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = dict(os.environ, LOCKD_STATE_DIR=str(state))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lockd.cli.main", "serve", "--port", str(port), "--backend-url", url],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        started = time.monotonic()

        def answered() -> httpx.Response | None:
            assert proc.poll() is None, log_path.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            except httpx.HTTPError:
                return None

        ready = wait_for(answered, 60, "lockd serve to answer /readyz", interval=0.1)
        took = time.monotonic() - started
        assert ready.status_code == 503
        detail = ready.json()["detail"]
        print(f"\n/readyz {took:.1f}s after start: {ready.status_code} {detail}")
        assert str(wrong.ca) in detail, detail
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        secrets = [line for line in wrong.key.read_text().splitlines() if line and not line.startswith("-----")]
        secrets.append((state / "admin_token").read_text().strip())
        answers = ready.text + httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert not [s for s in secrets if s in answers], "a secret in an answer"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        member.stop()
