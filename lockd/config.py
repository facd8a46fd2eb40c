"""`lockd serve` settings: oslo.config ini files (cinder.conf included), then command-line flags on top.

Sources, strongest first: a command-line flag, the ``[lockd]`` section, ``[coordination] backend_url`` (so
cinder.conf itself can be passed), ``$LOCKD_ADMIN_TOKEN`` for the token, then the defaults below. A backend
URL of stock tooz's ``etcd3+http(s)`` is read as the same etcd for the lockd protocol (the admin API reads
lock state from etcd and sees both kinds of holder); other tooz backends hold no state the API could show.
No backend at all means: start the embedded etcd (lockd.embedded).
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

from oslo_config import cfg

from lockd.errors import UsageError
from lockd.options import DEFAULT_LEASE_TTL, OPTION_HELP, SCHEMES, default_state_dir, parse_backend_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7170
#: The hold history's default bounds (lockd.api.history): 100,000 holds or one hour, whichever is smaller.
DEFAULT_MAX_HOLDS = 100_000
DEFAULT_MAX_AGE = 3600.0

LOCKD_OPTS = [
    cfg.StrOpt("backend_url", help="lock backend (lockd+etcd3+http://HOST:PORT); unset: [coordination], else embedded"),
    cfg.FloatOpt("lease_ttl", min=1.0, help=f"session lease TTL in seconds (default {DEFAULT_LEASE_TTL:g})"),
    cfg.HostAddressOpt("host", default=DEFAULT_HOST, help="address the admin API listens on"),
    cfg.PortOpt("port", default=DEFAULT_PORT, help="port the admin API listens on"),
    cfg.StrOpt(
        "admin_token", secret=True, help="bearer token mutating API calls must present (unset: made in state_dir)"
    ),
    cfg.StrOpt("admin_token_file", help="file holding the admin token (first line)"),
    cfg.ListOpt(
        "allowed_hosts",
        default=[],
        help="more names the API answers for in the Host header (besides the bind address and localhost)",
    ),
    cfg.StrOpt("state_dir", help="embedded etcd data and the announced backend URL (default: per user)"),
    cfg.StrOpt("status_url", help="status store: unset/etcd = the lock cluster, or a SQL URL"),
    cfg.StrOpt(
        "log_level", default="info", choices=["debug", "info", "warning", "error"], ignore_case=True, help="log level"
    ),
    cfg.FloatOpt(
        "deadlock_break_after",
        min=0.0,
        help="break a deadlock's suggested lock once the deadlock lasted this many seconds (audited); "
        "unset: never, an operator breaks it",
    ),
    cfg.StrOpt("ssl_certfile", help="serve HTTPS with this certificate (PEM)"),
    cfg.StrOpt("ssl_keyfile", help="private key for ssl_certfile"),
    cfg.IntOpt(
        "history_holds",
        default=DEFAULT_MAX_HOLDS,
        min=0,
        help="finished holds kept for GET /v1/history and the console's timeline (0: none)",
    ),
    cfg.FloatOpt(
        "history_seconds", default=DEFAULT_MAX_AGE, min=0, help="seconds a finished hold is kept in the history"
    ),
]
COORDINATION_OPTS = [cfg.StrOpt("backend_url", help="cinder's tooz backend URL")]
# cinder.conf's backend_url may say file://$state_path/...; knowing state_path lets that read cleanly.
DEFAULT_OPTS = [cfg.StrOpt("state_path", help="cinder's state path (only for $state_path in cinder.conf)")]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything `lockd serve` and ``create_app`` need, resolved. The token never shows in its repr."""

    backend_url: str | None = None  # a lockd+etcd3 URL; None until the embedded etcd supplies one
    lease_ttl: float | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    admin_token: str | None = dataclasses.field(default=None, repr=False)
    state_dir: Path = dataclasses.field(default_factory=default_state_dir)
    allowed_hosts: tuple[str, ...] = ()
    status_url: str | None = None
    log_level: str = "info"
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    deadlock_break_after: float | None = None
    #: The hold history's bounds (lockd.api.history): whichever of the two is reached first.
    history_holds: int = DEFAULT_MAX_HOLDS
    history_seconds: float = DEFAULT_MAX_AGE

    def with_backend(self, backend_url: str) -> Settings:
        return dataclasses.replace(self, backend_url=backend_url)

    def with_admin_token(self, token: str) -> Settings:
        return dataclasses.replace(self, admin_token=token)


def lockd_backend_url(url: str) -> str:
    """``url`` as a lockd URL: lockd's own unchanged, stock ``etcd3+http`` mapped onto the same etcd.

    Raises:
        UsageError: a tooz backend that is not etcd (its lock state cannot be listed or broken from here).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in SCHEMES:
        parse_backend_url(url)  # validates now, so a typo is a usage error at startup
        return url
    if parts.scheme in ("etcd3+http", "etcd3+https"):
        query = urllib.parse.parse_qsl(parts.query)
        kept = urllib.parse.urlencode([(k, v) for k, v in query if k in OPTION_HELP])
        mapped = urllib.parse.urlunsplit(("lockd+" + parts.scheme, parts.netloc, "", kept, ""))
        parse_backend_url(mapped)
        return mapped
    raise UsageError(
        f"lockd serve reads lock state from etcd; backend URL scheme {parts.scheme!r} is not supported "
        "(use lockd+etcd3+http://HOST:PORT, or no backend for the embedded etcd)"
    )


def load_settings(config_files: Sequence[str] = (), overrides: Mapping[str, object] | None = None) -> Settings:
    """Read ``config_files`` in order (later files win), apply ``overrides`` (flags; None = not given).

    Raises:
        UsageError: a file is missing or unreadable, a value is invalid, or the token file cannot be read.
    """
    conf = cfg.ConfigOpts()
    conf.register_opts(LOCKD_OPTS, group="lockd")
    conf.register_opts(COORDINATION_OPTS, group="coordination")
    conf.register_opts(DEFAULT_OPTS)
    for path in config_files:
        if not Path(path).is_file():
            raise UsageError(f"config file {path} does not exist or is not a file")
    try:
        conf(args=[], project="lockd", default_config_files=list(config_files), default_config_dirs=[])
        values = {opt.dest: conf.lockd[opt.dest] for opt in LOCKD_OPTS}
        coordination_url = conf.coordination.backend_url
    except (cfg.Error, ValueError) as exc:
        raise UsageError(f"bad configuration: {exc}") from None
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value

    backend = values["backend_url"] or coordination_url
    token = values["admin_token"] or os.environ.get("LOCKD_ADMIN_TOKEN") or None
    if not token and values["admin_token_file"]:
        token = read_token_file(str(values["admin_token_file"]))
    port = int(values["port"])  # type: ignore[call-overload]
    if not 0 < port < 65536:
        raise UsageError(f"port {port} is not between 1 and 65535")
    lease_ttl = values["lease_ttl"]
    if lease_ttl is not None and not float(lease_ttl) >= 1.0:  # type: ignore[arg-type]
        raise UsageError(f"lease_ttl {lease_ttl} must be at least 1 second")
    if bool(values["ssl_certfile"]) != bool(values["ssl_keyfile"]):
        raise UsageError("ssl_certfile and ssl_keyfile must be given together")
    return Settings(
        backend_url=lockd_backend_url(str(backend)) if backend else None,
        lease_ttl=float(lease_ttl) if lease_ttl is not None else None,  # type: ignore[arg-type]
        host=str(values["host"]),
        port=port,
        admin_token=token,
        state_dir=Path(str(values["state_dir"])) if values["state_dir"] else default_state_dir(),
        allowed_hosts=tuple(str(name) for name in values["allowed_hosts"] or ()),  # type: ignore[attr-defined]
        status_url=str(values["status_url"]) if values["status_url"] else None,
        log_level=str(values["log_level"]).lower(),
        ssl_certfile=str(values["ssl_certfile"]) if values["ssl_certfile"] else None,
        ssl_keyfile=str(values["ssl_keyfile"]) if values["ssl_keyfile"] else None,
        deadlock_break_after=(
            float(values["deadlock_break_after"])  # type: ignore[arg-type]
            if values["deadlock_break_after"] is not None
            else None
        ),
        history_holds=_at_least_zero("history_holds", values["history_holds"], int),
        history_seconds=_at_least_zero("history_seconds", values["history_seconds"], float),
    )


def _at_least_zero(name: str, value: object, kind: type[int] | type[float]) -> int | float:
    try:
        number = kind(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"{name} {value!r} is not a number") from None
    if not number >= 0:
        raise UsageError(f"{name} {value} must be 0 or more")
    return number


def read_token_file(path: str) -> str:
    try:
        text = Path(path).read_text().strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read admin token file {path}: {exc.__class__.__name__}") from None
    if not text or not text[0].strip():
        raise UsageError(f"admin token file {path} is empty")
    return text[0].strip()
