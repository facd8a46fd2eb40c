"""lockd.etcd.tls against a real etcd with client-certificate auth: renewed files are used from the next connection,
files caught half-way never replace a working context, and a refusal names the file.

The member trusts two CAs (``old`` and ``new``) for client certificates throughout, so a test can switch a
client's certificate between them without restarting etcd.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tooz.coordination

from lockd.errors import CertificateError, UsageError
from lockd.etcd.client import EtcdClient
from lockd.etcd.tls import TLSFiles
from lockd.etcd.wire import b64
from lockd.options import parse_backend_url
from tests.pki import Authority, bundle
from tests.tls_etcd import ClientFiles, ServerFiles, TLSEtcdMember

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates")

KEY = b"/lockd-test/tls"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Authority, Authority]:
    base = tmp_path_factory.mktemp("pki")
    return Authority(base, "old"), Authority(base, "new"), Authority(base, "stranger")


@pytest.fixture(scope="module")
def member(
    tmp_path_factory: pytest.TempPathFactory, pki: tuple[Authority, Authority, Authority]
) -> Iterator[TLSEtcdMember]:
    old, new, _ = pki
    base = tmp_path_factory.mktemp("tls-etcd")
    probe = ClientFiles.under(base / "probe")
    probe.install(bundle(old), old.issue("probe", server=False))
    member = TLSEtcdMember("tls", base / "data", ServerFiles.under(base / "tls"), probe)
    member.files.install(bundle(old, new), old.issue("tls", server=True))
    member.start()
    yield member
    member.stop()


@pytest.fixture
def files(tmp_path: Path, pki: tuple[Authority, Authority, Authority]) -> ClientFiles:
    """A client host's files: the old CA and a client certificate it signed."""
    old = pki[0]
    client = ClientFiles.under(tmp_path / "client")
    client.install(bundle(old), old.issue("client", server=False))
    return client


def _client(member: TLSEtcdMember, files: ClientFiles, endpoints: str = "") -> EtcdClient:
    extra = f"&endpoints={endpoints}" if endpoints else ""
    return EtcdClient(parse_backend_url(f"lockd+etcd3+https://{member.endpoint}?timeout=2&{files.query()}{extra}"))


def _next_connection(client: EtcdClient) -> None:
    """Close the client's idle connections, so its next request opens a new one (as after an etcd restart)."""
    client._requests.drop_member(0)


def _assert_served(client: EtcdClient) -> None:
    assert client.cluster_status()["header"]


@pytest.mark.parametrize("fault", ["missing", "cut short", "key of another certificate"])
def test_a_file_that_cannot_be_loaded_at_start_is_a_usage_error_naming_it(
    files: ClientFiles, pki: tuple[Authority, Authority, Authority], fault: str
) -> None:
    if fault == "missing":
        files.ca.unlink()
        named = files.ca
    elif fault == "cut short":
        text = files.cert.read_bytes()
        files.cert.write_bytes(text[: len(text) // 2])
        named = files.cert
    else:
        files.key.write_bytes(pki[0].issue("other", server=False).key.read_bytes())
        named = files.key
    with pytest.raises(UsageError) as raised:
        tooz.coordination.get_coordinator(f"lockd+etcd3+https://127.0.0.1:1?{files.query()}", b"tls-usage")
    assert str(named) in str(raised.value)


def test_renewed_files_are_used_from_the_next_connection_and_not_looked_at_per_request(
    member: TLSEtcdMember,
    files: ClientFiles,
    pki: tuple[Authority, Authority, Authority],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new, _ = pki
    client = _client(member, files)
    try:
        _assert_served(client)
        assert client.tls is not None and client.tls.loads == 1
        looks: list[float] = []
        real_stat = TLSFiles._stat
        monkeypatch.setattr(TLSFiles, "_stat", lambda self: looks.append(time.monotonic()) or real_stat(self))
        for _ in range(20):
            _assert_served(client)  # on the kept-alive connection
        assert looks == [], "the files were looked at for requests on a kept-alive connection"

        files.install(bundle(old, new), new.issue("client-2", server=False))  # by rename, as `install` does
        _assert_served(client)
        assert client.tls.loads == 1, "an open connection needs no new files"
        _next_connection(client)
        _assert_served(client)
        assert client.tls.loads == 2 and len(looks) == 1  # looked at once, for the new connection
    finally:
        client.close()


def test_files_caught_half_way_keep_the_working_context_and_are_reported_once(
    member: TLSEtcdMember,
    files: ClientFiles,
    pki: tuple[Authority, Authority, Authority],
    caplog: pytest.LogCaptureFixture,
) -> None:
    new = pki[1]
    client = _client(member, files)
    renewed = new.issue("client-3", server=False)
    try:
        _assert_served(client)
        assert client.tls is not None
        caplog.set_level(logging.WARNING, logger="lockd.etcd.tls")
        # 1. The certificate is being copied in place: half of it is there.
        text = renewed.cert.read_bytes()
        files.cert.write_bytes(text[: len(text) // 2])
        for _ in range(3):
            _next_connection(client)
            _assert_served(client)
        # 2. The certificate is whole, its key not copied yet: they do not match.
        files.cert.write_bytes(text)
        for _ in range(3):
            _next_connection(client)
            _assert_served(client)
        assert client.tls.loads == 1
        warnings = [r.getMessage() for r in caplog.records if r.name == "lockd.etcd.tls"]
        assert len(warnings) == 2, warnings  # once per state of the files, not once per connection
        assert str(files.cert) in warnings[0] and "cut short" in warnings[0]
        assert str(files.key) in warnings[1] and "does not match" in warnings[1]
        # 3. The key arrives: the next connection uses the pair.
        files.key.write_bytes(renewed.key.read_bytes())
        _next_connection(client)
        _assert_served(client)
        assert client.tls.loads == 2
    finally:
        client.close()


def test_a_refused_client_certificate_names_the_certificate_file(
    member: TLSEtcdMember, files: ClientFiles, pki: tuple[Authority, Authority, Authority]
) -> None:
    stranger = pki[2]  # etcd does not trust it
    files.install(issued=stranger.issue("client-x", server=False))
    # The refusal comes as an alert or as a bare EOF, about half and half (see lockd.etcd.tls): try it often.
    for _ in range(8):
        client = _client(member, files)
        try:
            with pytest.raises(CertificateError) as raised:
                client.cluster_status()
        finally:
            client.close()
        assert raised.value.option == "cert_cert" and raised.value.path == str(files.cert)
        assert str(files.cert) in str(raised.value) and str(files.key) in str(raised.value)


@contextlib.contextmanager
def impostor(authority: Authority) -> Iterator[str]:
    """A listener on loopback that completes TLS handshakes with a certificate of ``authority`` and nothing else
    (a member configured with a certificate its clients do not trust); yields its HOST:PORT."""
    issued = authority.issue(f"impostor-{time.monotonic_ns()}", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                context.wrap_socket(conn, server_side=True).close()
            except OSError:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_member_whose_certificate_does_not_verify_is_failed_over(
    member: TLSEtcdMember, files: ClientFiles, pki: tuple[Authority, Authority, Authority]
) -> None:
    """One bad member must not take a client down: the request goes to the next one, as for an unreachable one."""
    with impostor(pki[2]) as bad:
        client = EtcdClient(
            parse_backend_url(f"lockd+etcd3+https://{bad}?timeout=2&endpoints={member.endpoint}&{files.query()}")
        )
        try:
            _assert_served(client)
            assert client.endpoint_name() == f"https://{member.endpoint}"
        finally:
            client.close()


def test_every_member_refusing_is_a_certificate_error_naming_the_ca_file(
    files: ClientFiles, pki: tuple[Authority, Authority, Authority]
) -> None:
    """The first refusal fails over (TLSHandshakeError); once the last member refused too, the call ends with
    CertificateError, at once, and so does the next call."""
    with impostor(pki[2]) as first, impostor(pki[2]) as second:
        client = EtcdClient(
            parse_backend_url(f"lockd+etcd3+https://{first}?timeout=2&endpoints={second}&{files.query()}")
        )
        try:
            for _ in range(2):
                with pytest.raises(CertificateError) as raised:
                    client.cluster_status()
                assert raised.value.option == "ca_cert" and raised.value.path == str(files.ca)
                assert isinstance(raised.value.__cause__, ssl.SSLCertVerificationError)
        finally:
            client.close()


def test_the_watch_stream_reconnects_with_the_renewed_files(
    tmp_path: Path, pki: tuple[Authority, Authority, Authority]
) -> None:
    """Every file replaced (server side too) and etcd restarted: the watch stream opened afterwards verifies
    the new server certificate and presents the new client certificate."""
    old, new, _ = pki
    files = ClientFiles.under(tmp_path / "client")
    files.install(bundle(old), old.issue("watcher", server=False))
    solo = TLSEtcdMember("watch", tmp_path / "data", ServerFiles.under(tmp_path / "tls"), files)
    solo.files.install(bundle(old), old.issue("watch", server=True))
    solo.start()
    client = _client(solo, files)
    try:
        client.watch(KEY).close()
        files.install(bundle(new), new.issue("watcher-2", server=False))
        solo.files.install(bundle(new), new.issue("watch", server=True))
        solo.restart()
        client.close_watches()
        watch = client.watch(KEY)  # a new stream, on the files as they are now
        client.call("kv/put", {"key": b64(KEY), "value": b64(b"x")})
        batch = next(watch.batches(deadline=time.monotonic() + 10), None)
        assert batch and batch[0].kv.key == KEY
        watch.close()
    finally:
        client.close()
        solo.stop()
