"""The README's first command, `./scripts/run.sh`, really starts lockd on its embedded default and stops cleanly.

(The second, `./scripts/test.sh`, is what CI runs.)
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx

from tests.etcd_process import free_port
from tests.procs import wait_for

ROOT = Path(__file__).resolve().parents[2]


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_run_script_serves_on_the_embedded_default_and_stops_on_sigterm(tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "LOCKD_STATE_DIR": str(tmp_path), "LOCKD_BACKEND_URL": ""}
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "run.sh"), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: healthy(port), 180, "lockd serve to become ready", interval=0.5)
        assert (tmp_path / "backend_url").read_text().startswith("lockd+etcd3+http://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, stderr[-2000:]
    assert not (tmp_path / "backend_url").exists()
