"""etcd members and clusters that serve clients only over TLS and demand a client certificate.

Each member reads its files from paths of its own (``ServerFiles``: the CA bundle it trusts for client
certificates, its certificate and key), which a test replaces on disk as an operator would, then restarts the
member. The TLS flags reach etcd through its ``ETCD_*`` environment (``env`` as the member's launcher), so
tests.etcd_process.EtcdMember starts it unchanged. Peers talk plain HTTP: the renewal under test is the client
side.

What etcd re-reads without a restart (3.4.23 and 3.5.1, probed 2026-12): its own certificate and key, at every new
handshake; not the trusted CA file, which is read once at start. So a CA change on a member needs a restart.

The harness itself (readiness, leader lookup) connects with ``probe``, a set of client files the test keeps valid.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.etcd_cluster import EtcdCluster
from tests.etcd_process import EtcdMember
from tests.pki import Issued, install


@dataclass(frozen=True)
class ServerFiles:
    """Where one member reads its TLS files (replaced in place by the test, as by an operator)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def under(cls, directory: Path) -> ServerFiles:
        return cls(directory / "trusted-ca.pem", directory / "server.pem", directory / "server-key.pem")

    def install(self, ca_bundle: bytes | None = None, issued: Issued | None = None) -> None:
        if ca_bundle is not None:
            install(self.ca, ca_bundle)
        if issued is not None:
            install(self.cert, issued.cert)
            install(self.key, issued.key)


@dataclass(frozen=True)
class ClientFiles:
    """Where a client host reads its TLS files: the lockd URL options ``ca_cert``, ``cert_cert``, ``cert_key``."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def under(cls, directory: Path) -> ClientFiles:
        return cls(directory / "ca.pem", directory / "client.pem", directory / "client-key.pem")

    def install(self, ca_bundle: bytes | None = None, issued: Issued | None = None) -> None:
        if ca_bundle is not None:
            install(self.ca, ca_bundle)
        if issued is not None:
            install(self.cert, issued.cert)
            install(self.key, issued.key)

    def options(self) -> dict[str, str]:
        return {"ca_cert": str(self.ca), "cert_cert": str(self.cert), "cert_key": str(self.key)}

    def query(self) -> str:
        return "&".join(f"{k}={v}" for k, v in self.options().items())

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


class TLSEtcdMember(EtcdMember):
    """One etcd process with ``--client-cert-auth``: clients on ``https://``, certificates from ``files``."""

    def __init__(
        self, name: str, data_dir: Path, files: ServerFiles, probe: ClientFiles, binary: str | None = None
    ) -> None:
        """``binary``: the etcd to run (tests.etcd_process.etcd_35_binary for 3.5; default Debian's 3.4)."""
        launcher = [
            "env",
            f"ETCD_CERT_FILE={files.cert}",
            f"ETCD_KEY_FILE={files.key}",
            f"ETCD_TRUSTED_CA_FILE={files.ca}",
            "ETCD_CLIENT_CERT_AUTH=true",
        ]
        super().__init__(name, data_dir, launcher=launcher, binary=binary)
        self.files = files
        self.probe = probe

    @property
    def client_url(self) -> str:
        return f"https://{self.endpoint}"

    def post(self, path: str, timeout: float = 1.0) -> dict[str, object]:
        """POST ``{}`` to ``/v3/<path>`` with the probe's files (read now); raises OSError if it does not answer."""
        request = urllib.request.Request(
            f"{self.client_url}/v3/{path}", data=b"{}", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout, context=self.probe.context()) as response:
            return json.loads(response.read())

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd {self.name} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.client_url + "/health", timeout=1, context=self.probe.context()) as r:
                    if b'"true"' in r.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd {self.name} not healthy over TLS after {timeout}s")

    def restart(self) -> None:
        """``systemctl restart etcd``: SIGTERM (a leader hands leadership over first), start, wait until healthy."""
        self.stop()
        self.start()


class TLSEtcdCluster(EtcdCluster):
    """Three (or ``size``) TLS members, each with its own ``ServerFiles`` under ``base_dir/mN/tls``."""

    def __init__(self, base_dir: Path, probe: ClientFiles, size: int = 3) -> None:
        self.members = [
            TLSEtcdMember(f"m{i}", base_dir / f"m{i}" / "data", ServerFiles.under(base_dir / f"m{i}" / "tls"), probe)
            for i in range(size)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial
            m.cluster_token = self.members[0].cluster_token

    @staticmethod
    def status(member: EtcdMember, timeout: float = 1.0) -> dict[str, object]:
        assert isinstance(member, TLSEtcdMember)
        return member.post("maintenance/status", timeout)

    def tls_members(self) -> list[TLSEtcdMember]:
        return [m for m in self.members if isinstance(m, TLSEtcdMember)]

    def rolling_restart(self) -> list[float]:
        """Restart each member in turn, waiting for all three to agree on a leader before the next one.

        Returns the seconds each member was down (stop to healthy).
        """
        downtimes = []
        for member in self.tls_members():
            started = time.monotonic()
            member.restart()
            downtimes.append(time.monotonic() - started)
            self.wait_for_leader(require_all=True)
        return downtimes
