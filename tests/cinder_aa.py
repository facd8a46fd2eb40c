"""What the tests that run real Cinder services share: the prerequisites check, Cinder's virtualenv, and the demo's
orchestration module (deploy/cinder-aa/demo.py), loaded from its file."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
CINDER_AA = REPO / "deploy" / "cinder-aa"


def missing_services() -> str | None:
    """Why the machine cannot run Cinder's services (RabbitMQ, MariaDB and their clients), or None."""
    try:
        socket.create_connection(("127.0.0.1", 5672), 3).close()
    except OSError:
        return "RabbitMQ does not answer on 127.0.0.1:5672"
    if shutil.which("mariadb") is None or shutil.which("rabbitmqctl") is None:
        return "the mariadb client or rabbitmqctl is missing"
    probe = subprocess.run(["mariadb", "-uroot", "-h127.0.0.1", "-e", "SELECT 1"], capture_output=True)
    if probe.returncode != 0:
        return "MariaDB does not answer on 127.0.0.1:3306 as root"
    return None


def skip_unless_ci(why: str) -> None:
    """Skip with the reason; under CI=true a missing prerequisite is a failure instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {why}")
    pytest.skip(why)


def cinder_venv() -> Path:
    """Cinder 29's virtualenv (deploy/cinder-aa/venv.sh: made on first use, lockd from this checkout)."""
    done = subprocess.run([str(CINDER_AA / "venv.sh")], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"deploy/cinder-aa/venv.sh failed: {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def load_demo() -> ModuleType:
    """deploy/cinder-aa/demo.py as a module (it is a script, not a package)."""
    if "cinder_aa_demo" in sys.modules:
        return sys.modules["cinder_aa_demo"]
    spec = importlib.util.spec_from_file_location("cinder_aa_demo", CINDER_AA / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cinder_aa_demo"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
