"""``patch_lockutils()``: oslo.concurrency's external (file) locks become lockd locks, with no driver change.

Hook points (oslo.concurrency 5 to 7): ``lockutils.lock()`` takes its in-process lock (a semaphore, or a FIFO
reader/writer lock when ``fair=True``) and then, for ``external=True``, calls the *module global*
``external_lock(name, lock_file_prefix, lock_path)`` at call time and uses only ``acquire(delay=, blocking=)``
and ``release()`` on the result. ``synchronized``, ``synchronized_with_prefix`` (Cinder's ``utils.synchronized``)
and ``lock_with_prefix`` all go through ``lock()``. Replacing the globals ``external_lock`` and
``remove_external_lock_file`` is therefore enough:

- the in-process lock is untouched, so internal locks, ``semaphores=`` and ``fair=True`` among threads behave
  exactly as before; across processes and hosts lockd's queue is FIFO too, so ``fair=True`` keeps its meaning;
- ``blocking=False`` on a lock held elsewhere makes ``acquire`` return False, and oslo's ``lock()`` raises
  ``AcquireLockFailedException`` as it does for a held file lock; the function does not run;
- ``delay`` was the polling interval of the file lock; lockd waiters are woken by a watch, so it is accepted
  (and checked as fasteners checks it) but has nothing left to tune;
- ``lock_path`` is not needed any more and ignored: the lockd name is oslo's lock *file name* (prefix rule and
  ``os.sep`` -> ``_`` as in ``lockutils._get_lock_path``), which is the same on every host. Names that are not
  1..512 printable ASCII characters are hashed deterministically (see ``lock_name``);
- ``remove_external_lock_file`` (and the partials of ``remove_external_lock_file_with_prefix``) do nothing:
  a lockd lock leaves nothing behind to clean up, and deleting a lock someone holds would be a break.

Lost locks: oslo's API has no way to tell a caller, after the fact, that its lock went away (the release sits
in a ``finally`` inside ``lock()``; raising there would replace the function's result or hide its exception).
So a lock lost while held is logged at ERROR when the lease is lost (from the keepalive thread, at the moment
it happens) and again at release. Code that must know should use ``drivers_shim.synchronized``, which raises
``LockLost``.

Lock scope (``drivers_shim.scope``): names matching a host-local pattern (``patch_lockutils(host_local=...)``,
else ``$LOCKD_HOST_LOCAL_LOCKS``, else the defaults such as ``cinder-lioadm``, ``cinder-nvmetcli``, ``os-brick-*``)
are handed to oslo's original ``external_lock`` / ``remove_external_lock_file`` with the caller's arguments: a
file lock in ``lock_path``, exactly as without the patch. They guard things of one host (a kernel target, the
initiator), which a cluster-wide lock would only serialise across hosts, and which unpatched processes on the same
host (nova-compute sharing os-brick's lock_path) still lock with files.

Not covered: a module that did ``from oslo_concurrency.lockutils import external_lock`` *before* the patch keeps
the original function. The ``LOCKD_PATCH_LOCKUTILS=1`` hook (see ``_lockd_autopatch``) patches lockutils right
after it is first imported, before any driver can bind the name, so it has no such gap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from drivers_shim import runtime
from drivers_shim.scope import DEFAULT_HOST_LOCAL_LOCKS, LockScope, host_local_from_env
from lockd.errors import BackendError
from lockd.etcd.keys import MAX_NAME_LENGTH

if TYPE_CHECKING:
    import fasteners

LOG = logging.getLogger(__name__)

_HASH_CHARS = 32  # 128 bits of sha256: collisions are not a practical concern
_READABLE_CHARS = 200  # how much of an odd name is kept in front of its hash, for people reading `lockd locks`

_patch_lock = threading.Lock()
_originals: dict[str, Any] = {}  #: oslo's own functions, kept once seen: host-local locks are still made by them
_scope = LockScope(DEFAULT_HOST_LOCAL_LOCKS)  #: replaced by every patch_lockutils() before it swaps functions


def lock_name(name: str, lock_file_prefix: str | None = None) -> str:
    """The lockd lock name for an oslo external lock: the file name oslo would have used in ``lock_path``.

    ``("x", "cinder-")`` and ``("x", "cinder")`` -> ``"cinder-x"``; ``os.sep`` becomes ``_``, so NetApp's
    path-named locks keep the name their lock file had and two names that shared a lock file still share a
    lock. A result that is not 1..512 printable ASCII characters becomes a printable head (the first 200
    characters, others shown as ``?``) plus ``~`` and 32 hex digits of its sha256: the same on every host.
    """
    name = str(name).replace(os.sep, "_")
    if lock_file_prefix:
        sep = "" if lock_file_prefix.endswith("-") else "-"
        name = f"{lock_file_prefix}{sep}{name}"
    if 0 < len(name) <= MAX_NAME_LENGTH and all(" " <= ch <= "~" for ch in name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    head = "".join(ch if " " <= ch <= "~" else "?" for ch in name[:_READABLE_CHARS])
    return f"{head}~{digest}"


class DistributedLock:
    """What ``external_lock()`` returns once patched: a lockd lock shaped like ``fasteners.InterProcessLock``.

    One object per ``external_lock()`` call, used by one thread (as oslo uses it). ``name`` is the lockd name,
    ``oslo_name`` the name the caller passed.
    """

    def __init__(self, name: str, oslo_name: str) -> None:
        self.name = name
        self.oslo_name = oslo_name
        self.acquired = False
        self.lost = False
        self._lock: Any = None

    def acquire(
        self, blocking: bool = True, delay: float = 0.01, max_delay: float = 0.1, timeout: float | None = None
    ) -> bool:
        """Take the lock: wait forever, up to ``timeout`` seconds, or (``blocking=False``) try once.

        Returns True when held, False when it is held elsewhere and the wait ran out (oslo's ``lock()`` then
        raises ``AcquireLockFailedException``). ``delay``/``max_delay`` are validated as fasteners does but
        otherwise unused: waiters are woken by etcd, not by polling.
        Raises:
            ValueError: a negative ``delay`` or ``timeout`` (as fasteners).
            lockd.errors.UsageError: no lock backend is configured (see ``drivers_shim.runtime``).
            lockd.errors.BackendError: etcd could not be reached; nothing is held, the guarded code must not run.
        """
        if delay < 0:
            raise ValueError("Delay must be greater than or equal to zero")
        if timeout is not None and timeout < 0:
            raise ValueError("Timeout must be greater than or equal to zero")
        if self.acquired:
            return True  # fasteners re-locks its own file lock without waiting; keep that
        wait: bool | float = False if not blocking else (True if timeout is None else float(timeout))
        lock = runtime.get_lock(self.name)
        if not lock.acquire(wait):
            return False
        self._lock, self.acquired, self.lost = lock, True, False
        on_lost = getattr(lock, "on_lost", None)  # lockd locks only; other tooz backends cannot tell
        if on_lost is not None:
            on_lost(self._report_lost)
        return True

    def _report_lost(self) -> None:
        """Runs in the keepalive thread the moment the lease is lost (the lock's callback is dropped at release)."""
        self.lost = True
        LOG.error(
            "LOCK LOST: lockd lock %r (oslo external lock %r) is no longer held because the session lease of "
            "this process was lost; the code inside it is running unprotected and another host may now hold it",
            self.name,
            self.oslo_name,
        )

    def release(self) -> None:
        """Release the lock. A lock found no longer ours is logged at ERROR (see the module docstring).

        Raises:
            threading.ThreadError: the lock is not held by this object (as fasteners).
        """
        if not self.acquired:
            raise threading.ThreadError("Unable to release an unacquired lock")
        lock, self._lock, self.acquired = self._lock, None, False
        token = getattr(lock, "token", None)
        try:
            still_ours = lock.release()
        except BackendError as exc:
            # Not lost: the session deletes the key as soon as etcd answers again (or the lease runs out).
            LOG.warning("release of lockd lock %r deferred: %s", self.name, exc)
            return
        if not still_ours:
            LOG.error(
                "lockd lock %r (oslo external lock %r) was no longer held at release%s: the work it guarded "
                "may have run concurrently with another holder",
                self.name,
                self.oslo_name,
                "" if token is None else f" (token {token})",
            )

    def __enter__(self) -> DistributedLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<DistributedLock {self.name!r} acquired={self.acquired}>"


def external_lock(
    name: str, lock_file_prefix: str | None = None, lock_path: str | None = None
) -> DistributedLock | fasteners.InterProcessLock:
    """Patched ``lockutils.external_lock``: a lockd lock named like the file (``lock_path`` is ignored).

    A name in the host-local scope gets oslo's own file lock instead (``lock_path`` used, and required, as oslo
    requires it).
    """
    lockd_name = lock_name(name, lock_file_prefix)
    if _scope.is_host_local(lockd_name):
        return _original("external_lock")(name, lock_file_prefix, lock_path)
    return DistributedLock(lockd_name, name)


def remove_external_lock_file(
    name: str, lock_file_prefix: str | None = None, lock_path: str | None = None, semaphores: Any = None
) -> None:
    """Patched ``lockutils.remove_external_lock_file``: nothing to remove, a lockd lock leaves no file.

    A name in the host-local scope is a file lock, so oslo's own function removes its file.
    """
    lockd_name = lock_name(name, lock_file_prefix)
    if _scope.is_host_local(lockd_name):
        _original("remove_external_lock_file")(name, lock_file_prefix, lock_path, semaphores)
        return
    LOG.debug("remove_external_lock_file(%r): lockd lock %r has no file to remove", name, lockd_name)


def _original(attr: str) -> Any:
    """oslo's own ``attr``: the one replaced by the patch, or (never patched) the one lockutils still has."""
    original = _originals.get(attr)
    if original is None:
        from oslo_concurrency import lockutils

        original = getattr(lockutils, attr)
    return original


_REPLACEMENTS = {"external_lock": external_lock, "remove_external_lock_file": remove_external_lock_file}


def patch_lockutils(module: types.ModuleType | None = None, *, host_local: Iterable[str] | None = None) -> None:
    """From now on oslo.concurrency external locks are lockd locks, except host-local ones (idempotent).

    ``host_local``: fnmatch patterns of lockd names (``lock_name()``, e.g. ``cinder-nvmetcli``) that stay oslo's
    file locks; ``[]`` for none. ``None`` reads ``$LOCKD_HOST_LOCAL_LOCKS``, and without it takes
    ``drivers_shim.scope.DEFAULT_HOST_LOCAL_LOCKS``. Calling again replaces the scope.

    The backend is the shim's (``drivers_shim.configure``, ``$LOCKD_BACKEND_URL``, a lockd URL in
    ``[coordination] backend_url``, or ``lockd serve``'s: see ``drivers_shim.runtime``), looked up when the first
    external lock is taken: patching is cheap, cannot fail on a backend that is down, and may come before the
    config files are parsed.
    ``module`` is lockutils itself (the import hook passes it while it is still being imported).

    Raises:
        lockd.errors.UsageError: a bad ``host_local`` (a single string, a non-string or empty pattern) or a
            bad ``$LOCKD_HOST_LOCAL_LOCKS``; lockutils is then left as it was.
    """
    global _scope
    scope = LockScope(host_local_from_env() if host_local is None else host_local)
    if module is None:
        from oslo_concurrency import lockutils as module
    with _patch_lock:
        _scope = scope  # before the swap: no lock may ever be taken under a scope not asked for
        for attr, replacement in _REPLACEMENTS.items():
            current = getattr(module, attr)
            if current is not replacement:
                _originals[attr] = current
                setattr(module, attr, replacement)
    LOG.info(
        "oslo.concurrency external locks are now lockd locks (drivers_shim.patch_lockutils), "
        "except host-local file locks matching %s",
        ", ".join(scope.host_local) or "nothing",
    )


def unpatch_lockutils() -> None:
    """Put oslo's file locks back (locks taken while patched stay lockd locks until released)."""
    from oslo_concurrency import lockutils

    with _patch_lock:
        for attr, replacement in _REPLACEMENTS.items():
            if getattr(lockutils, attr) is replacement and attr in _originals:
                setattr(lockutils, attr, _originals[attr])


def is_patched() -> bool:
    """True while lockutils' external locks are lockd locks."""
    from oslo_concurrency import lockutils

    return lockutils.external_lock is external_lock
