"""``lockd serve``: the sidecar. Reads its settings, starts the embedded etcd when no backend is configured,
then runs the admin API under uvicorn until Ctrl-C or SIGTERM, and stops the API before its etcd.

uvicorn handles SIGINT/SIGTERM itself while it runs, and re-raises the signal after a graceful shutdown with
the handler that was installed before it. Ours only notes the signal, so the re-raise does not kill the
process before the embedded etcd is stopped and its announced URL removed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from lockd.admin_token import ensure_token, token_path
from lockd.config import DEFAULT_PORT, Settings, load_settings
from lockd.embedded import EmbeddedEtcd
from lockd.etcd.tls import TLSFiles
from lockd.options import parse_backend_url

LOG = logging.getLogger("lockd.serve")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "serve",
        help="run the sidecar: admin API, and an embedded etcd when no backend is configured",
        description="Run the lockd admin API. With no backend URL (flag, [lockd] or [coordination] backend_url), "
        "start a private etcd on loopback under the state directory and announce it to the shim.",
    )
    parser.add_argument("--config-file", action="append", default=[], metavar="FILE", help="ini file (repeatable)")
    parser.add_argument("--backend-url", help="lockd+etcd3+http://HOST:PORT (or stock etcd3+http://)")
    parser.add_argument("--lease-ttl", type=float, help="session lease TTL, seconds")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--admin-token", help="bearer token for mutations (prefer --admin-token-file)")
    parser.add_argument(
        "--admin-token-file", help="file holding the admin token (none given: STATE_DIR/admin_token, made once)"
    )
    parser.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        metavar="NAME",
        help="a name clients may use in the Host header besides the bind address and localhost (repeatable)",
    )
    parser.add_argument("--state-dir", help="embedded etcd data, announced URL (default $LOCKD_STATE_DIR or per user)")
    parser.add_argument("--status-url", help="status store URL (default: the lock cluster)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--ssl-certfile", help="serve HTTPS with this certificate")
    parser.add_argument("--ssl-keyfile", help="key of --ssl-certfile")
    parser.add_argument(
        "--history-holds", type=int, help="finished holds kept for /v1/history (default 100000; 0: none)"
    )
    parser.add_argument("--history-seconds", type=float, help="seconds a finished hold is kept (default 3600)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {
        name: getattr(args, name)
        for name in (
            "backend_url", "lease_ttl", "host", "port", "admin_token", "admin_token_file",
            "state_dir", "status_url", "log_level", "ssl_certfile", "ssl_keyfile", "allowed_hosts",
            "history_holds", "history_seconds",
        )
    }  # fmt: skip
    settings = load_settings(args.config_file, overrides)
    if settings.backend_url and settings.backend_url.startswith("lockd+etcd3+https:"):
        # A TLS file that cannot be loaded is a usage error (exit 2, one line naming it), said before uvicorn starts
        # and would only report "startup failed" under a traceback. Later changes are followed (lockd.etcd.tls).
        TLSFiles(parse_backend_url(settings.backend_url))
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signals = _NoteSignals()
    embedded: EmbeddedEtcd | None = None
    try:
        if settings.backend_url is None:
            etcd = EmbeddedEtcd(settings.state_dir)
            url = etcd.start()  # cleans up after itself when it fails
            embedded = etcd
            print(f"lockd: started embedded etcd at {url} (data in {etcd.data_dir})", file=sys.stderr)
            settings = settings.with_backend(url)
        if settings.admin_token is None:
            token, created = ensure_token(settings.state_dir)
            settings = settings.with_admin_token(token)
            print(
                f"lockd: admin token {'created in' if created else 'read from'} {token_path(settings.state_dir)} "
                "(the CLI on this host uses it)",
                file=sys.stderr,
            )
        if signals.received:
            return 0
        _serve(settings)
    finally:
        if embedded is not None:
            embedded.stop()
            print("lockd: stopped embedded etcd", file=sys.stderr)
        signals.restore()
    return 0


def _serve(settings: Settings) -> None:
    import uvicorn

    from lockd.api import create_app

    LOG.warning(
        "lockd admin API on %s://%s:%d, backend %s, admin token %s",
        "https" if settings.ssl_certfile else "http",
        settings.host,
        settings.port,
        settings.backend_url.split("?", 1)[0] if settings.backend_url else None,
        "set" if settings.admin_token else "not set",
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        log_config=None,  # keep the logging set up above, one format for everything
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn's way of saying startup failed (port taken, bad certificate, ...)
        server.started = False
    if not server.started:
        raise OSError(f"the admin API did not start on {settings.host}:{settings.port} (see the log above)")


class _NoteSignals:
    """SIGINT/SIGTERM handlers that only note the signal (uvicorn takes over while it runs)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous = {sig: signal.signal(sig, self._note) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
