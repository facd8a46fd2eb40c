"""The process's lock settings and its one coordinator: configured explicitly, from the environment, or discovered.

Everything in lockd that needs "this process's backend" reads it here: the patched oslo locks and
``drivers_shim.synchronized`` (locks), ``lockd.status`` (the status store and who writes). ``drivers_shim.configure``
is this module's ``configure``; lockd itself never imports the shim.

Backend URL order, first found wins:

1. ``configure(backend_url=...)``: code that chose a backend meant it;
2. ``$LOCKD_BACKEND_URL``: set for this one process (a systemd drop-in, a test);
3. ``[coordination] backend_url`` of this process's own oslo.config ``cfg.CONF`` (cinder.conf for
   cinder-volume), only when the operator set it (file, command line or ``OS_COORDINATION__BACKEND_URL``, not
   Cinder's default ``file://$state_path``) and it is a ``lockd+etcd3+http(s)`` URL: then the patched oslo
   locks and Cinder's own coordination locks use one URL written once, and cannot drift apart;
4. the URL a running ``lockd serve`` announced in its state directory.

Explicit beats implicit: each source is more specific to this process, or more deliberately chosen for the
shim, than the ones after it, so an operator can always override cinder.conf or the local ``lockd serve``
without editing them. cinder.conf is read only for lockd URLs: a ``file://`` URL is exactly the host-local
lock the shim exists to replace, and a stock ``etcd3+http`` URL says the host's coordination is not on lockd
yet, so the shim does not guess a lockd URL from it: it keeps needing ``$LOCKD_BACKEND_URL``, as before.

The URL is resolved when the first lock is taken, not at import or patch time: cinder-volume has parsed its
config files by then. A forked child gets its own coordinator (a session lease must never be shared by two
processes: one's exit would revoke the other's locks).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any

import tooz.coordination

from lockd.errors import UsageError
from lockd.options import SCHEMES, announced_backend_url, check_backend_url

if TYPE_CHECKING:
    from oslo_config import cfg


@dataclasses.dataclass
class Settings:
    backend_url: str | None = None
    prefix: str = "cinder-"
    member_id: str | None = None
    status_url: str | None = None


ENV_BACKEND_URL = "LOCKD_BACKEND_URL"

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
    """Choose the lock backend, name prefix, member id and status store; stops a coordinator already started.

    Raises:
        UsageError: ``backend_url`` cannot name a backend here (see ``lockd.options.check_backend_url``); the
            settings in force are kept.
    """
    global _settings
    if backend_url is not None:
        check_backend_url(backend_url, "drivers_shim.configure(backend_url=...)")
    with _lock:
        _stop_locked()
        _settings = Settings(backend_url, prefix, member_id, status_url)


def settings() -> Settings:
    return _settings


def backend_url() -> str:
    """The backend URL in force (see the module docstring for the order), checked.

    Raises:
        UsageError: none is configured, set in the environment, set in ``[coordination]`` or announced; or the
            one found cannot name a backend here (the message names where it came from).
    """
    sources = (
        ("drivers_shim.configure(backend_url=...)", lambda: _settings.backend_url),
        (ENV_BACKEND_URL, lambda: os.environ.get(ENV_BACKEND_URL)),
        ("[coordination] backend_url", oslo_config_backend_url),
        ("the URL announced by lockd serve", announced_backend_url),
    )
    for source, read in sources:
        url = read()
        if url:
            return check_backend_url(url, source)
    raise UsageError(
        "no lock backend: call drivers_shim.configure(backend_url=...), set LOCKD_BACKEND_URL, "
        "set [coordination] backend_url = lockd+etcd3+http://... in the service's config file (cinder.conf), "
        "or run `lockd serve` on this host"
    )


def check_environment() -> None:
    """Check ``$LOCKD_BACKEND_URL`` now, if it is set: for start-up hooks, which run before any lock is taken.

    Raises:
        UsageError: as ``check_backend_url``, naming the variable.
    """
    url = os.environ.get(ENV_BACKEND_URL)
    if url:
        check_backend_url(url, ENV_BACKEND_URL)


def oslo_config_backend_url() -> str | None:
    """``[coordination] backend_url`` from this process's ``cfg.CONF`` when the operator set a lockd URL there.

    None (never an exception: this source is optional, the next one is tried) when oslo.config is missing, no
    one registered the option (Cinder does, in ``cinder/coordination.py``), the value is the option's default
    (Cinder's ``file://$state_path``; before the config files are parsed every value is) or a code override
    rather than the operator's, or it is not a ``lockd+etcd3+http(s)`` URL.
    """
    try:
        from oslo_config import cfg
    except ImportError:
        return None
    conf = cfg.CONF
    try:
        if not _operator_set(conf, "backend_url", "coordination"):
            return None
        url = conf.coordination.backend_url
    except Exception:  # another program's configuration: any failure in it means "not from here"
        return None
    if not url or urllib.parse.urlsplit(url).scheme not in SCHEMES:
        return None
    return url


def _operator_set(conf: cfg.ConfigOpts, name: str, group: str) -> bool:
    """True when ``group.name`` is registered and its value came from the operator: a config file, the command
    line or the environment (oslo's ``Locations.is_user_controlled``), not a default or a code override."""
    if group not in conf or name not in conf[group]:
        return False
    location = conf.get_location(name, group)
    return location is not None and location.location.is_user_controlled


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
