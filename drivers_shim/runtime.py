"""The process's one coordinator for the shim: configured explicitly, from the environment, or discovered.

Order: ``configure(backend_url=...)``, else ``$LOCKD_BACKEND_URL``, else the URL a running ``lockd serve``
announced in its state directory. A forked child gets its own coordinator (a session lease must never be
shared by two processes: one's exit would revoke the other's locks).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from typing import Any

import tooz.coordination

from lockd.errors import UsageError
from lockd.options import announced_backend_url


@dataclasses.dataclass
class Settings:
    backend_url: str | None = None
    prefix: str = "cinder-"
    member_id: str | None = None
    status_url: str | None = None


_settings = Settings()
_coordinator: tooz.coordination.CoordinationDriver | None = None
_owner_pid = 0
_lock = threading.Lock()


def configure(
    backend_url: str | None = None,
    prefix: str = "cinder-",
    member_id: str | None = None,
    status_url: str | None = None,
) -> None:
    """Choose the lock backend, name prefix, member id and status store; stops a coordinator already started."""
    global _settings
    with _lock:
        _stop_locked()
        _settings = Settings(backend_url, prefix, member_id, status_url)


def settings() -> Settings:
    return _settings


def backend_url() -> str:
    """The backend URL in force. Raises UsageError when none is configured, set or announced."""
    url = _settings.backend_url or os.environ.get("LOCKD_BACKEND_URL") or announced_backend_url()
    if not url:
        raise UsageError(
            "no lock backend: call drivers_shim.configure(backend_url=...), set LOCKD_BACKEND_URL, "
            "or run `lockd serve` on this host"
        )
    return url


def status_url() -> str | None:
    return _settings.status_url or os.environ.get("LOCKD_STATUS_URL") or None


def member_id() -> str:
    return _settings.member_id or f"{socket.gethostname()}-{os.getpid()}"


def coordinator() -> tooz.coordination.CoordinationDriver:
    """The started coordinator of this process (created on first use, again after a fork)."""
    global _coordinator, _owner_pid
    coord = _coordinator
    if coord is not None and _owner_pid == os.getpid():
        return coord
    with _lock:
        if _coordinator is None or _owner_pid != os.getpid():
            coord = tooz.coordination.get_coordinator(backend_url(), member_id().encode())
            coord.start(start_heart=True)
            _coordinator, _owner_pid = coord, os.getpid()
        return _coordinator


def get_lock(name: str) -> Any:
    """A lock of the process's coordinator. Names go to tooz as ASCII bytes, as Cinder passes them: tooz's own
    drivers (file, redis, ...) expect bytes; lockd takes either."""
    return coordinator().get_lock(name.encode("ascii"))


def stop() -> None:
    """Stop the coordinator (releasing its locks and lease); the next use starts a new one."""
    with _lock:
        _stop_locked()


def _stop_locked() -> None:
    global _coordinator
    coord, _coordinator = _coordinator, None
    if coord is not None and _owner_pid == os.getpid():
        try:
            coord.stop()
        except tooz.ToozError:
            pass
