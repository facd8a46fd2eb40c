"""Throw-away certificate authorities for TLS tests, made with the ``openssl`` command (as an operator would).

An :class:`Authority` is a CA (EC P-256: a key is ~1 ms to make, where RSA-2048 takes ~100 ms) that issues
server and client certificates for 127.0.0.1. Server certificates carry both serverAuth and clientAuth: etcd 3.4's
JSON gateway dials its own gRPC port with the server certificate, and with ``--client-cert-auth`` that dial is
refused ("bad certificate") unless the certificate may also act as a client.

:func:`install` replaces a file the way a careful operator does (write a temporary file next to it, then
``rename``), so a reader sees the old file or the new one, never half of it; tests that want the half-written
case write it themselves.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files in the authority's directory."""

    cert: Path
    key: Path


class Authority:
    """A self-signed CA in ``directory`` (``NAME-ca.pem`` and its key) that issues leaf certificates."""

    def __init__(self, directory: Path, name: str, days: int = 2) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        self.days = days
        self.key = directory / f"{name}-ca-key.pem"
        self.cert = directory / f"{name}-ca.pem"
        _new_key(self.key)
        _openssl(
            "req", "-x509", "-new", "-key", str(self.key), "-out", str(self.cert), "-days", str(days),
            "-subj", f"/CN=lockd test CA {name} {uuid.uuid4().hex[:6]}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def issue(self, label: str, server: bool) -> Issued:
        """A leaf certificate for 127.0.0.1 signed by this CA: a server's (serverAuth and clientAuth) or a
        client's (clientAuth only)."""
        key = self.directory / f"{self.name}-{label}-key.pem"
        csr = self.directory / f"{self.name}-{label}.csr"
        cert = self.directory / f"{self.name}-{label}.pem"
        ext = self.directory / f"{self.name}-{label}.ext"
        usage = "serverAuth,clientAuth" if server else "clientAuth"
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        _new_key(key)
        _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={label}")
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key), "-CAcreateserial",
            "-out", str(cert), "-days", str(self.days), "-extfile", str(ext),
        )  # fmt: skip
        return Issued(cert, key)


def bundle(*authorities: Authority) -> bytes:
    """The PEM bundle of several CAs (what a trusted-CA file holds while two CAs are trusted)."""
    return b"".join(a.cert.read_bytes() for a in authorities)


def install(path: Path, data: bytes | Path) -> None:
    """Replace ``path`` atomically (temporary file in the same directory, then rename), mode 0600 for keys."""
    content = data.read_bytes() if isinstance(data, Path) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(content)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
