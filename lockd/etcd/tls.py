"""A client's TLS files, re-read for each new etcd connection once they change on disk, and handshake failures that
name the file to fix.

Theory of operation
-------------------
Certificates are renewed by replacing the files at the paths the lockd URL names (``ca_cert``, ``cert_cert``,
``cert_key``) and restarting etcd; a lock client must not need a restart too (issue 24), and must not lose a lock
over it. So a client does not build one ``SSLContext`` for its life: :meth:`TLSFiles.current` gives the context
for the *next* connection, rebuilt when a file has changed.

When to look: at each new connection (a pooled request connection, the session's, a reconnect, a watch stream),
never per request. Connections are kept alive and pooled (lockd.etcd.pool), so a look is three ``stat`` calls per
connection opened, a few microseconds against a handshake's milliseconds. A connection already open keeps its TLS
session (the handshake is over; renewed files change nothing on it) until it closes; a restarted etcd closes them
all, and the next ones use the new files.

What "changed" means: the device, inode, size, mtime or ctime (nanoseconds) of a file differs from when the
context was loaded. Replacing by rename (``mv``, ``install``, a Kubernetes secret's symlink swap: ``stat`` follows
links) gives a new inode; a rewrite in place moves the size or mtime. (File times come from the kernel's coarse
clock, a few ms: a same-size rewrite in place within that window of the load it replaces could go unseen; a rename
cannot.)

A file that cannot be loaded (half-written during the renewal, a key that does not match its certificate yet
because the other one is still to be copied, missing for a moment) never replaces a working context: connections
keep the last good one, the problem is logged once for that state of the files, and loading is tried again at
the next connection, so the renewal is picked up as soon as the files are whole. When the client is made there is
no last good context: a file that cannot be loaded is a UsageError naming it.

Handshake failures that name the file:

- etcd's certificate does not verify with the CA file: ``SSLCertVerificationError`` during the handshake; the file
  is ``ca_cert``.
- etcd refuses this client's certificate: with TLS 1.3 the client's side of the handshake ends before the server
  has checked our certificate, so the refusal (an alert) comes with the first answer, or, when our request crossed
  it, the connection just ends (EOF or reset, about half the time on loopback). When the first exchange on a new
  connection ends so, one more handshake that sends nothing and reads for up to ``_VERDICT_WAIT`` gets the
  server's verdict: a certificate alert means ``cert_cert``/``cert_key``.

Each such failure is raised as :class:`TLSHandshakeError`, an OSError, so the client fails over to the next member
exactly as for an unreachable one: one member with a wrong certificate must not take down the clients that happen
to talk to it. Once every member has refused since the last handshake that worked, and the files on disk are
still the ones refused (nothing newer waits to be loaded), no retry can help: the failure is raised as
:class:`lockd.errors.CertificateError` (a BackendError, not an OSError, so the request ends at once), which a lock
waiter does not retry either (lockd.lock). The session's keepalive does go on trying until its lease runs out, each
time on a new connection, so a lock survives a file fixed within its TTL.

Messages name paths and OpenSSL's reason, never a file's content.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from lockd.errors import CertificateError, UsageError
from lockd.etcd.lean_http import LeanConnection
from lockd.options import BackendOptions

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")

#: How long a verdict handshake reads for the server's alert. It comes within a round trip of the handshake (0.0 s
#: on loopback); an accepted certificate gets no alert, so this is what a failure that was not ours costs more.
_VERDICT_WAIT = 0.5

#: One file's identity on disk, or the errno that stopped ``stat``.
_FileState = tuple[int, ...]


class TLSHandshakeError(OSError):
    """A handshake with one member failed over a certificate; the client fails over (see the module doc)."""


@dataclass(frozen=True)
class Loaded:
    """A context and the state of the files it was built from."""

    context: ssl.SSLContext
    signature: tuple[_FileState, ...]
    at: float  # time.time() of the load


class _Unloadable(Exception):
    def __init__(self, option: str, path: str | None, reason: str) -> None:
        super().__init__(f"{option} {path}: {reason}" if path else f"{option}: {reason}")
        self.option, self.path = option, path


class TLSFiles:
    """The SSLContext for a client's next connection to etcd, following ``ca_cert``, ``cert_cert``, ``cert_key``."""

    def __init__(self, options: BackendOptions) -> None:
        """Load the files now.

        Raises:
            UsageError: a file is missing, unreadable, incomplete, or the key does not match the certificate.
        """
        self.ca_cert, self.cert_cert, self.cert_key = options.ca_cert, options.cert_cert, options.cert_key
        self._members = len(options.endpoints)
        self._mutex = threading.Lock()
        self._refusals: set[int] = set()  # members that refused the current context since one accepted it
        self._failed: tuple[_FileState, ...] | None = None  # the state of the files that last failed to load
        self._failure = ""
        #: Contexts built so far (1 after creation): tests and `lockd serve`'s figures.
        self.loads = 0
        signature = self._stat()
        try:
            self._loaded = Loaded(self._load(), signature, time.time())
        except _Unloadable as exc:
            raise UsageError(f"cannot load the TLS file {exc}") from None
        self.loads = 1

    # -- the context ------------------------------------------------------------------------------------------

    def current(self) -> Loaded:
        """The context for a new connection: reloaded if a file changed, else (or if that fails) the last good one."""
        signature = self._stat()
        loaded = self._loaded
        if signature == loaded.signature:
            return loaded
        with self._mutex:
            loaded = self._loaded
            if signature == loaded.signature:
                return loaded
            try:
                context = self._load()
            except _Unloadable as exc:
                if signature != self._failed:
                    LOG.warning(
                        "TLS file %s; new etcd connections keep the files loaded at %s, and try again at the next one",
                        exc,
                        time.strftime("%H:%M:%S", time.localtime(loaded.at)),
                    )
                self._failed, self._failure = signature, str(exc)
                return loaded
            changed = [
                name for name, old, new in zip(self._names(), loaded.signature, signature, strict=True) if old != new
            ]
            self._loaded = Loaded(context, signature, time.time())
            self._failed, self._failure = None, ""
            self._refusals.clear()
            self.loads += 1
        LOG.info("TLS files reloaded for new etcd connections (%s changed)", ", ".join(changed))
        return self._loaded

    @property
    def last_good(self) -> Loaded:
        """The context in use, without looking at the files."""
        return self._loaded

    def connection(self, member: int, host: str, port: int, timeout: float) -> http.client.HTTPSConnection:
        """A (not yet connected) connection to one member that takes the current context when it connects."""
        return _Connection(self, member, host, port, timeout)

    def _names(self) -> list[str]:
        return [name for name, path in self._files() if path]

    def _files(self) -> list[tuple[str, str | None]]:
        return [("ca_cert", self.ca_cert), ("cert_cert", self.cert_cert), ("cert_key", self.cert_key)]

    def _stat(self) -> tuple[_FileState, ...]:
        states: list[_FileState] = []
        for _, path in self._files():
            if not path:
                continue
            try:
                st = os.stat(path)
            except OSError as exc:
                states.append((-1, exc.errno or 0))
                continue
            states.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(states)

    def _load(self) -> ssl.SSLContext:
        """A context from the files as they are now. Raises _Unloadable naming the file at fault."""
        for option, path in self._files():
            if path:
                _check_pem(option, path, key=option == "cert_key" or (option == "cert_cert" and not self.cert_key))
        try:
            context = ssl.create_default_context(cafile=self.ca_cert)
        except (ssl.SSLError, OSError) as exc:
            raise _Unloadable("ca_cert", self.ca_cert, _reason(exc)) from None
        if self.cert_cert:
            try:
                context.load_cert_chain(self.cert_cert, self.cert_key)
            except (ssl.SSLError, OSError) as exc:
                if "KEY_VALUES_MISMATCH" in str(exc):
                    raise _Unloadable("cert_key", self.cert_key, f"does not match cert_cert {self.cert_cert}") from None
                pair = f"with cert_key {self.cert_key}" if self.cert_key else "(key in the same file)"
                raise _Unloadable("cert_cert", self.cert_cert, f"{pair}: {_reason(exc)}") from None
        return context

    # -- handshake outcomes -------------------------------------------------------------------------------------

    def accepted(self, member: int) -> None:
        """A handshake (and its first answer) worked: refusals so far no longer say the files are at fault."""
        if self._refusals:
            with self._mutex:
                self._refusals.clear()

    def refused(self, member: int, loaded: Loaded, option: str, reason: str, endpoint: str) -> Exception:
        """The error for a handshake that ``member`` failed with ``loaded`` over a certificate (see the module doc):
        a CertificateError when every member has refused the files still on disk, else a TLSHandshakeError."""
        signature = self._stat()
        with self._mutex:
            unloadable = self._failure if self._failed is not None and self._failed == signature else ""
            newer = loaded is not self._loaded or signature not in (loaded.signature, self._failed)
            if not newer:
                self._refusals.add(member)
            certain = not newer and len(self._refusals) >= self._members
        path = self.ca_cert if option == "ca_cert" else self.cert_cert
        message = self._explain(option, reason, unloadable)
        if certain:
            return CertificateError(message, option, path, endpoint)
        return TLSHandshakeError(f"{message} ({endpoint})")

    def _explain(self, option: str, reason: str, unloadable: str) -> str:
        if option == "ca_cert":
            where = f"ca_cert {self.ca_cert}" if self.ca_cert else "the system's CA certificates (no ca_cert given)"
            message = (
                f"etcd's certificate does not verify with {where}: {reason}; that file must hold the CA that "
                "signed etcd's certificate (during a renewal: the old and the new CA)"
            )
        elif self.cert_cert:
            message = (
                f"etcd refused this client's certificate, cert_cert {self.cert_cert} (cert_key "
                f"{self.cert_key or 'in the same file'}): {reason}; it must be signed by a CA in etcd's "
                "--trusted-ca-file, and valid"
            )
        else:
            message = f"etcd wants a client certificate and none is configured (cert_cert, cert_key): {reason}"
        if unloadable:
            message += f" (the file on disk cannot be loaded: {unloadable}; connections use the last good one)"
        return message


class _Connection(LeanConnection, http.client.HTTPSConnection):
    """An HTTPS connection that takes the files' current context at each connect and names the file on a refusal."""

    def __init__(self, files: TLSFiles, member: int, host: str, port: int, timeout: float) -> None:
        self._files = files
        self._member = member
        self._loaded = files.last_good
        self._fresh = True  # no answer yet on this TLS session
        super().__init__(host, port, timeout=timeout, context=self._loaded.context)

    @property
    def _endpoint(self) -> str:
        return f"https://{self.host}:{self.port}"

    def connect(self) -> None:
        self._loaded = self._files.current()
        self._context = self._loaded.context
        self._fresh = True
        try:
            super().connect()
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or _reason(exc)
            raise self._files.refused(self._member, self._loaded, "ca_cert", reason, self._endpoint) from exc
        except ssl.SSLError as exc:
            if _refuses_our_certificate(exc):  # TLS 1.2: the server's verdict comes within the handshake
                reason = _reason(exc)
                raise self._files.refused(self._member, self._loaded, "cert_cert", reason, self._endpoint) from exc
            raise

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        encode_chunked: bool = False,
    ) -> None:
        send = super().request
        self._first_exchange(lambda: send(method, url, body, headers or {}, encode_chunked=encode_chunked))

    def getresponse(self) -> http.client.HTTPResponse:
        response = self._first_exchange(super().getresponse)
        if self._fresh:
            self._fresh = False
            self._files.accepted(self._member)
        return response

    def _first_exchange(self, step: Callable[[], _T]) -> _T:
        """Run one step of a request; on a new connection, tell a refused client certificate from other failures."""
        try:
            return step()
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
            if not self._fresh:
                raise
            if isinstance(exc, ssl.SSLError) and _refuses_our_certificate(exc):
                reason = _reason(exc)
            elif isinstance(exc, (ssl.SSLEOFError, ConnectionResetError, http.client.RemoteDisconnected)):
                verdict = _verdict(self._loaded.context, self.host, self.port)
                if verdict is None:
                    raise
                reason = verdict
            else:
                raise
            raise self._files.refused(self._member, self._loaded, "cert_cert", reason, self._endpoint) from exc


def _verdict(context: ssl.SSLContext, host: str, port: int) -> str | None:
    """Handshake again, send nothing, and read: the server's certificate alert (its reason), or None (no alert)."""
    try:
        with socket.create_connection((host, port), timeout=_VERDICT_WAIT) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.settimeout(_VERDICT_WAIT)
                tls.recv(1)
    except ssl.SSLError as exc:
        return _reason(exc) if _refuses_our_certificate(exc) else None
    except OSError:
        return None
    return None


def _refuses_our_certificate(exc: ssl.SSLError) -> bool:
    """An alert from the server about our certificate (bad, unknown CA, expired, revoked, required...)."""
    reason = str(exc.reason or "")
    return "ALERT" in reason and ("CERTIFICATE" in reason or reason.endswith("UNKNOWN_CA"))


def _reason(exc: BaseException) -> str:
    """OpenSSL's words without CPython's source location: "[SSL: KEY_VALUES_MISMATCH] key values mismatch"."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return re.sub(r" \(_ssl\.c:\d+\)$", "", text)


def _check_pem(option: str, path: str, key: bool) -> None:
    """The file reads, and holds whole PEM blocks (a certificate; a private key where ``key``): a file caught half
    copied fails here, by name, instead of as OpenSSL's "PEM lib"."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise _Unloadable(option, path, exc.strerror or str(exc)) from None
    begins, ends = text.count(b"-----BEGIN "), text.count(b"-----END ")
    if not begins:
        raise _Unloadable(option, path, "no PEM block in it (empty, or not PEM)")
    if begins != ends or not text.rstrip().endswith(b"-----"):
        raise _Unloadable(option, path, "a PEM block is cut short (the file is incomplete)")
    if key and b"PRIVATE KEY-----" not in text:
        raise _Unloadable(option, path, "no private key in it")
    if option != "cert_key" and b"CERTIFICATE-----" not in text:
        raise _Unloadable(option, path, "no certificate in it")
