"""`lockd serve` configured from cinder.conf (oslo.config ini): backend, port and token file read, TLS served,
flags winning over the file, and bad configuration refused with exit 2."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.etcd_process import EtcdMember, free_port
from tests.procs import wait_for


def _serve(args: list[str], tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LOCKD_STATE_DIR": str(tmp_path / "state")}
    env.pop("LOCKD_ADMIN_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "lockd.cli.main", "serve", *args],
        env=env,
        stdout=open(tmp_path / "serve.log", "wb"),
        stderr=subprocess.STDOUT,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_serve_reads_cinder_conf_and_serves_tls(etcd: EtcdMember, tmp_path: Path, lock_name: str) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
        check=True,
        capture_output=True,
    )
    (tmp_path / "token").write_text("file-token\n")
    port = free_port()
    (tmp_path / "cinder.conf").write_text(
        "[DEFAULT]\nstate_path = /var/lib/cinder\ndebug = True\n"
        f"[coordination]\nbackend_url = etcd3+http://{etcd.endpoint}?timeout=5\n"
        f"[lockd]\nport = 1\nadmin_token_file = {tmp_path / 'token'}\n"
        f"ssl_certfile = {tmp_path / 'cert.pem'}\nssl_keyfile = {tmp_path / 'key.pem'}\n"
    )
    proc = _serve(["--config-file", str(tmp_path / "cinder.conf"), "--port", str(port)], tmp_path)
    try:
        with httpx.Client(
            base_url=f"https://127.0.0.1:{port}",
            verify=ssl.create_default_context(cafile=tmp_path / "cert.pem"),
            timeout=5,
        ) as http:

            def up() -> bool:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    return http.get("/readyz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(up, timeout=30, what="lockd serve over TLS")
            assert http.delete(f"/v1/locks/{lock_name}").status_code == 401
            assert (
                http.delete(f"/v1/locks/{lock_name}", headers={"Authorization": "Bearer file-token"}).status_code == 404
            )
        assert not (tmp_path / "state" / "backend_url").exists(), "a configured backend must not start an embedded etcd"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert "file-token" not in (tmp_path / "serve.log").read_text()


@pytest.mark.parametrize(
    "conf, flags, message",
    [
        ("[coordination]\nbackend_url = file:///var/lib/cinder\n", [], "not supported"),
        ("[lockd]\nport = 99999\n", [], "bad configuration"),
        ("[lockd]\nbackend_url = lockd+etcd3+http://127.0.0.1:2379?bogus=1\n", [], "unknown backend option"),
        ("", ["--config-file", "/nonexistent/lockd.conf"], "does not exist"),
        ("", ["--admin-token-file", "/nonexistent/token"], "cannot read admin token file"),
    ],
)
def test_bad_configuration_is_exit_2_with_one_line(tmp_path: Path, conf: str, flags: list[str], message: str) -> None:
    (tmp_path / "lockd.conf").write_text(conf)
    proc = _serve(["--config-file", str(tmp_path / "lockd.conf"), "--port", str(free_port()), *flags], tmp_path)
    assert proc.wait(60) == 2
    err = (tmp_path / "serve.log").read_text().strip()
    assert len(err.splitlines()) == 1 and message in err, err
