"""What keeps a browser from being turned against the admin API: a Host allow-list and protective headers.

Threats, all from a web page the operator's browser shows while `lockd serve` runs on that host:

- DNS rebinding: ``evil.example`` first resolves to the attacker, then to 127.0.0.1; the page's script then
  reads (and could write to) the API as "same origin". The browser still sends ``Host: evil.example``, so every
  request whose Host is not a name this server answers for is refused with 400 and the reason, before any
  handler runs. Answered for: the bind address, ``localhost`` and loopback addresses, the names configured in
  ``[lockd] allowed_hosts``; on a wildcard bind (0.0.0.0, ::) also any IP literal (a rebinding page cannot
  make its own origin an IP literal of ours) and this machine's host name.
- Cross-site requests: mutations need ``Authorization: Bearer`` (lockd.api.deps), which a cross-site form or
  a simple request cannot carry; no CORS header is ever sent, so a script elsewhere cannot either.
- Clickjacking of the console's break button: ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'``.
- Injected content: a Content-Security-Policy allowing only lockd's own scripts, styles and images (no inline
  script, no other origin). ``/docs`` (Swagger UI, from this host: lockd.api.api_docs) also allows style
  attributes and ``data:`` images, which Swagger UI draws with; still only this origin's scripts.

A pure ASGI middleware (no body copying), so it costs a header scan per request.
"""

from __future__ import annotations

import ipaddress
import json
import socket

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lockd.config import Settings

STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI (lockd.api.api_docs): our scripts only, as everywhere; it sets style attributes and draws data: icons.
API_DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
API_DOCS_PATHS = ("/docs",)
_WILDCARDS = ("0.0.0.0", "::", "")


class HostAllowList:
    """Which ``Host`` header values this server answers for (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        bind = settings.host.strip("[]").lower()
        self.wildcard = bind in _WILDCARDS
        names = {"localhost", bind, *(name.lower().rstrip(".") for name in settings.allowed_hosts)}
        if self.wildcard:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self.names = frozenset(name for name in names if name)

    def allows(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        if name in self.names:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return address.is_loopback or self.wildcard


def host_name(header: str) -> str | None:
    """The host part of a Host header (``name``, ``name:port``, ``[v6]:port``); None when malformed."""
    if header.startswith("["):
        name, closed, rest = header[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = header.partition(":")
    if not name or (port and not port.isdigit()):
        return None
    return name


class BrowserGuard:
    """Refuses foreign Host headers (400 with the reason) and adds the protective headers to every answer."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = HostAllowList(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((value for key, value in scope["headers"] if key == b"host"), None)
        reason = self._refusal(raw)
        csp = API_DOCS_CSP if scope["path"] in API_DOCS_PATHS else STRICT_CSP

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {key.lower() for key, _ in headers}
                for key, value in (
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", csp.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ):
                    if key not in present:
                        headers.append((key, value))
                message = {**message, "headers": headers}
            await send(message)

        if reason is not None:
            body = json.dumps({"detail": reason}).encode()
            await send_guarded(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send_guarded({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_guarded)

    def _refusal(self, raw: bytes | None) -> str | None:
        """Why a request with this Host header is refused, or None when it is served."""
        if raw is None:
            return "a Host header is required"
        header = raw.decode("latin-1")
        name = host_name(header)
        if name is None:
            return f"malformed Host header {header[:100]!r}"
        if not self.hosts.allows(name):
            return (
                f"Host {name[:100]!r} is not a name this lockd answers for (a DNS-rebinding page looks like this); "
                "add it to [lockd] allowed_hosts if it is yours"
            )
        return None
