"""Choosing a status store: from a URL (``open_store``) or from the shim's configuration (``default_store``).

The default follows the process's settings in ``lockd.runtime`` (``drivers_shim.configure(status_url=...)`` /
``$LOCKD_STATUS_URL``); unset means the etcd store on the lock backend's own cluster, through the coordinator's
etcd client. It is cached per process
(a forked child opens its own) and reopened when the URL or the coordinator changes.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lockd import runtime
from lockd.errors import UsageError
from lockd.etcd.client import EtcdClient
from lockd.options import SCHEMES as ETCD_SCHEMES
from lockd.options import parse_backend_url
from lockd.status.etcd_store import EtcdStatusStore
from lockd.status.model import StatusStore

# Kept here, not imported from sql_store, so that SQLAlchemy (an extra) is imported only when used.
_SQL_SCHEMES = ("sqlite", "mysql", "mariadb", "postgresql")

_default: tuple[tuple[Any, ...], StatusStore] | None = None
_default_lock = threading.Lock()


def open_store(status_url: str | None, etcd_client: EtcdClient | None = None) -> StatusStore:
    """A status store for ``status_url``.

    ``None``, ``""`` or ``"etcd"``: the etcd store on ``etcd_client`` (the lock backend's; not closed by the
    store). ``lockd+etcd3+http://...``: an etcd store on its own client. ``sqlite:///...``,
    ``mysql+pymysql://...``, ``postgresql://...``: the SQL store (needs the ``lockd[sql]`` extra).

    Raises:
        UsageError: unknown scheme, bad option, no etcd client for the etcd store, or SQLAlchemy missing.
    """
    if status_url in (None, "", "etcd"):
        if etcd_client is None:
            raise UsageError("the etcd status store needs the lock backend's etcd client (or give a status URL)")
        return EtcdStatusStore(etcd_client)
    if not isinstance(status_url, str) or "://" not in status_url:
        raise UsageError(f"status URL {status_url!r} is not 'etcd', a lockd+etcd3 URL or a SQL URL")
    scheme = status_url.split("://", 1)[0]
    if scheme in ETCD_SCHEMES:
        return EtcdStatusStore(EtcdClient(parse_backend_url(status_url)), owns_client=True)
    if scheme.split("+", 1)[0] in _SQL_SCHEMES:
        try:
            from lockd.status.sql_store import SqlStatusStore
        except ImportError as error:
            raise UsageError(f"the SQL status store needs SQLAlchemy (pip install 'lockd[sql]'): {error}") from None
        return SqlStatusStore(status_url)
    raise UsageError(f"status URL scheme {scheme!r} is not one of etcd, {', '.join(ETCD_SCHEMES + _SQL_SCHEMES)}")


def default_store() -> StatusStore:
    """The store the shim is configured for (see the module doc).

    Raises:
        UsageError: no status URL and the lock backend is not a lockd etcd backend (nothing to keep statuses in).
    """
    global _default
    url = runtime.status_url()
    etcd = None
    if not url:
        etcd = getattr(runtime.coordinator(), "etcd", None)
        if not isinstance(etcd, EtcdClient):
            raise UsageError("statuses need a lockd+etcd3 lock backend or a status_url (e.g. sqlite:///status.db)")
    key = (os.getpid(), url, id(etcd))
    with _default_lock:
        if _default is not None and _default[0] == key:
            return _default[1]
        if _default is not None and _default[0][0] == os.getpid():
            _default[1].close()
        store = open_store(url, etcd)
        _default = (key, store)
        return store
