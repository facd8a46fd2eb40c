"""Backend URL and query options, parsed once into a frozen dataclass.

tooz says ``timeout`` for three things (lease TTL, HTTP timeout, wait); here the public names of the URL are
mapped once onto ``lease_ttl`` and ``request_timeout``. Everything else in lockd reads :class:`BackendOptions`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from lockd.errors import UsageError

SCHEMES = ("lockd+etcd3+http", "lockd+etcd3+https")
DEFAULT_PORT = 2379
DEFAULT_LEASE_TTL = 10.0
DEFAULT_REQUEST_TIMEOUT = 5.0

#: Options accepted in the URL query, with their meaning (the driver's docstring table is built from this).
OPTION_HELP = {
    "lease_ttl": f"seconds a dead process keeps its locks (session lease TTL), default {DEFAULT_LEASE_TTL:g}",
    "timeout": f"seconds to wait for one etcd HTTP answer before trying the next endpoint, "
    f"default {DEFAULT_REQUEST_TIMEOUT:g}",
    "endpoints": "more etcd members to fail over to, as HOST:PORT,HOST:PORT",
    "ca_cert": "CA bundle to verify etcd's certificate (https)",
    "cert_cert": "client certificate (https)",
    "cert_key": "client certificate key (https)",
}


@dataclasses.dataclass(frozen=True)
class BackendOptions:
    """Where etcd is and how lockd talks to it."""

    endpoints: tuple[tuple[str, int], ...]
    https: bool = False
    lease_ttl: float = DEFAULT_LEASE_TTL
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    ca_cert: str | None = None
    cert_cert: str | None = None
    cert_key: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"


def _first(value: object) -> str:
    # tooz hands options over as lists (parse_qs) or as plain values (keyword arguments).
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else ""
    return str(value)


def _positive_float(name: str, raw: str, minimum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"option {name}={raw!r} is not a number") from None
    if not value >= minimum or value == float("inf"):
        raise UsageError(f"option {name}={raw!r} must be a finite number >= {minimum:g}")
    return value


def _host_port(item: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    if not sep:
        host, port = item.strip(), str(DEFAULT_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"endpoint {item!r} is not HOST:PORT")
    return host, int(port)


def parse_backend_url(url: str, extra: Mapping[str, object] | None = None) -> BackendOptions:
    """Parse ``lockd+etcd3+http://HOST:PORT?lease_ttl=..`` plus keyword options (which win over the query).

    Raises:
        UsageError: the scheme, an endpoint or an option is not valid; nothing was started.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise UsageError(f"backend URL scheme {parts.scheme!r} is not one of {', '.join(SCHEMES)}")
    query: dict[str, object] = dict(urllib.parse.parse_qs(parts.query, keep_blank_values=True))
    query.update(extra or {})
    unknown = sorted(set(query) - set(OPTION_HELP))
    # tooz passes its own generic options (e.g. lock_timeout, membership_timeout); ignore only those.
    unknown = [k for k in unknown if k not in ("lock_timeout", "membership_timeout", "api_version")]
    if unknown:
        raise UsageError(f"unknown backend option(s) {', '.join(unknown)}; known: {', '.join(OPTION_HELP)}")
    try:
        first = (parts.hostname or "localhost", parts.port or DEFAULT_PORT)
    except ValueError:
        raise UsageError(f"backend URL {url!r} has an invalid port") from None
    endpoints = [first]
    if "endpoints" in query:
        for item in _first(query["endpoints"]).split(","):
            if item.strip():
                hp = _host_port(item)
                if hp not in endpoints:
                    endpoints.append(hp)
    opts = {k: _first(v) for k, v in query.items()}
    return BackendOptions(
        endpoints=tuple(endpoints),
        https=parts.scheme.endswith("https"),
        lease_ttl=_positive_float("lease_ttl", opts["lease_ttl"], 1.0) if "lease_ttl" in opts else DEFAULT_LEASE_TTL,
        request_timeout=(
            _positive_float("timeout", opts["timeout"], 0.05) if "timeout" in opts else DEFAULT_REQUEST_TIMEOUT
        ),
        ca_cert=opts.get("ca_cert") or None,
        cert_cert=opts.get("cert_cert") or None,
        cert_key=opts.get("cert_key") or None,
    )


def check_backend_url(url: object, source: str = "backend URL") -> str:
    """``url`` if it can name a lock backend here: a valid lockd URL, or the scheme of an installed tooz driver.

    Run where a URL enters (``drivers_shim.configure``, the environment, start-up), so a typo is reported there,
    in one line naming ``source``, and not as stevedore's ``NoMatches`` traceback at the first lock. Only the
    scheme is ever echoed: another driver's URL may carry a password.

    Raises:
        UsageError: not a ``SCHEME://...`` string, a lockd URL with a bad endpoint or option, or a scheme no
            installed package registers in tooz's ``tooz.backends`` entry-point group.
    """
    if not isinstance(url, str) or "://" not in url:
        raise UsageError(f"{source} is not a URL: expected lockd+etcd3+http://HOST:PORT or another tooz backend URL")
    scheme = url.split("://", 1)[0]
    if scheme in SCHEMES:
        try:
            parse_backend_url(url)
        except UsageError as exc:
            raise UsageError(f"{source}: {exc}") from None
        return url
    installed = sorted({ep.name for ep in importlib.metadata.entry_points(group="tooz.backends")})
    if scheme not in installed:
        raise UsageError(
            f"{source} scheme {scheme!r} is not a lock backend installed here; "
            f"installed tooz backends: {', '.join(installed)}"
        )
    return url


def default_state_dir() -> Path:
    """Where `lockd serve` keeps its embedded etcd and announces its URL: $LOCKD_STATE_DIR, else per user."""
    if os.environ.get("LOCKD_STATE_DIR"):
        return Path(os.environ["LOCKD_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/lockd")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lockd"


BACKEND_URL_FILE = "backend_url"


def announced_backend_url(state_dir: Path | None = None) -> str | None:
    """The URL a running `lockd serve` wrote into its state dir, so the shim needs no configuration."""
    path = (state_dir or default_state_dir()) / BACKEND_URL_FILE
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None
