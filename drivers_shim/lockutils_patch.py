"""``patch_lockutils()``: oslo.concurrency's external (file) locks also become cluster-wide lockd locks.

Hook point (oslo.concurrency 5 to 7): ``lockutils.lock()`` takes its in-process lock (a semaphore, or a FIFO
reader/writer lock when ``fair=True``) and then, for ``external=True``, calls the *module global*
``external_lock(name, lock_file_prefix, lock_path)`` at call time and uses ``acquire(delay=, blocking=)`` and
``release()`` on the result. ``synchronized``, ``synchronized_with_prefix`` (Cinder's ``utils.synchronized``) and
``lock_with_prefix`` all go through ``lock()``. Replacing that one global is therefore enough.

The rule: turning the patch on never excludes less than the file lock did. So the patched external lock is
oslo's own file lock *and* a lockd lock:

- ``ExternalLock`` is a ``fasteners.InterProcessLock`` (what oslo returns, and an instance of
  ``lockutils.InterProcessLock``) on the very path oslo would use (oslo's own ``external_lock`` computes it, so
  ``lock_path`` is needed and checked exactly as without the patch). ``acquire`` takes the file lock first (the
  same ``fcntl.lockf`` lock fasteners takes, see ``drivers_shim.file_lock``), then the lockd lock of the same
  name within what is left of the caller's timeout; ``release`` lets go in reverse.
  A process on the same host without the patch (``cinder-manage``, a unit without the drop-in, the old process
  of a rolling restart) is excluded by the file, a process on another host by lockd. Every patched process
  takes the two in the same order, so the pair cannot deadlock.
- If the lockd acquire fails (etcd unreachable, the wait ran out, a bad backend URL) the file lock is released
  before ``acquire`` returns False or raises: no local lock outlives a failed acquire.
- The in-process lock is untouched, so internal locks, ``semaphores=``, ``fair=True`` and ``blocking=False``
  behave as unpatched (a lock held elsewhere makes ``acquire`` return False and oslo raises
  ``AcquireLockFailedException``; the function does not run). Across hosts lockd's queue is FIFO.
- The lockd name is oslo's lock *file name* (prefix rule and ``os.sep`` -> ``_`` as in oslo), which is the same
  on every host whatever each host's ``lock_path``. Names that are not 1..512 printable ASCII characters are
  hashed deterministically (see ``lock_name``).
- ``remove_external_lock_file`` is not replaced: it removes the lock file as oslo documents. A lockd lock
  leaves nothing behind to clean up.

Lost locks: oslo's API has no way to tell a caller, after the fact, that its lock went away (the release sits
in a ``finally`` inside ``lock()``; raising there would replace the function's result or hide its exception).
So a lock lost while held is logged at ERROR when the lease is lost (from the keepalive thread, at the moment
it happens) and again at release. Code that must know should use ``drivers_shim.synchronized``, which raises
``LockLost``. The file lock is still held then: the host's other processes stay excluded.

Lock scope (``drivers_shim.scope``): names matching a host-local pattern (``patch_lockutils(host_local=...)``,
else ``$LOCKD_HOST_LOCAL_LOCKS``, else the defaults such as ``cinder-lioadm``, ``cinder-nvmetcli``, ``os-brick-*``)
get oslo's original file lock alone. They guard things of one host (a kernel target, the initiator), which a
cluster-wide lock would only serialise across hosts.

Not covered: a module that did ``from oslo_concurrency.lockutils import external_lock`` *before* the patch keeps
the original function. The ``LOCKD_PATCH_LOCKUTILS=1`` hook (see ``_lockd_autopatch``) patches lockutils right
after it is first imported, before any driver can bind the name, so it has no such gap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import types
from collections.abc import Iterable
from typing import Any

import fasteners

from drivers_shim import file_lock
from drivers_shim.scope import DEFAULT_HOST_LOCAL_LOCKS, LockScope, host_local_from_env
from lockd import runtime
from lockd.errors import BackendError
from lockd.etcd.keys import MAX_NAME_LENGTH

LOG = logging.getLogger(__name__)

_HASH_CHARS = 32  # 128 bits of sha256: collisions are not a practical concern
_READABLE_CHARS = 200  # how much of an odd name is kept in front of its hash, for people reading `lockd locks`

_patch_lock = threading.Lock()
_original: Any = None  #: oslo's own external_lock, kept once replaced: every file lock is still made by it
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
    if 0 < len(name) <= MAX_NAME_LENGTH and name.isascii() and name.isprintable():  # " " to "~"
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    head = "".join(ch if " " <= ch <= "~" else "?" for ch in name[:_READABLE_CHARS])
    return f"{head}~{digest}"


class ExternalLock(fasteners.InterProcessLock):
    """What the patched ``external_lock()`` returns: oslo's file lock at ``path``, then the lockd lock ``name``.

    A ``fasteners.InterProcessLock`` (oslo's type) with its interface: ``acquire``, ``release``, ``exists()``,
    ``path``, ``acquired`` (True while both are held), context manager. The file lock itself is taken by
    ``drivers_shim.file_lock``: fasteners' own lock, without its per-call overhead (that module says why).
    One object per ``external_lock()`` call, used by one thread (as oslo uses it). ``oslo_name`` is the name the
    caller passed.
    """

    def __init__(self, path: str | bytes, name: str, oslo_name: str) -> None:
        super().__init__(path)
        self.name = name
        self.oslo_name = oslo_name
        self.lost = False
        self._lock: Any = None
        self._fd: int | None = None  # the lock file's descriptor while the file lock is held

    def acquire(
        self, blocking: bool = True, delay: float = 0.01, max_delay: float = 0.1, timeout: float | None = None
    ) -> bool:
        """Take the file lock, then the lockd lock: wait forever, up to ``timeout`` seconds for both, or
        (``blocking=False``) try each once.

        Returns True when both are held; False when either is held elsewhere and the wait ran out (oslo's
        ``lock()`` then raises ``AcquireLockFailedException``), with neither held. ``delay``/``max_delay`` pace
        the file lock's polling, as unpatched; lockd waiters are woken by etcd.
        Raises:
            ValueError: a negative ``delay`` or ``timeout`` (as fasteners).
            threading.ThreadError: the lock file could not be opened or locked (as fasteners).
            lockd.errors.UsageError: no usable lock backend is configured (see ``lockd.runtime``).
            lockd.errors.BackendError: etcd could not be reached. In every error case the file lock is released
                first: the guarded code must not run, and the host's other processes must not wait for nothing.
        """
        if delay < 0:
            raise ValueError("Delay must be greater than or equal to zero")
        if timeout is not None and timeout < 0:
            raise ValueError("Timeout must be greater than or equal to zero")
        if self.acquired:
            return True  # fasteners re-locks its own file lock without waiting; keep that
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            fd = file_lock.lock(self.path, blocking, delay, max_delay, deadline)
        except file_lock.FileLockError as exc:
            raise threading.ThreadError(str(exc)) from exc
        if fd is None:
            return False
        try:
            lock = runtime.get_lock(self.name)
            if not blocking:
                wait: bool | float = False
            elif deadline is None:
                wait = True
            else:
                wait = max(0.0, deadline - time.monotonic())
            if not lock.acquire(wait):
                file_lock.unlock(fd)
                return False
        except BaseException:
            file_lock.unlock(fd)
            raise
        self._fd, self._lock, self.lost, self.acquired = fd, lock, False, True
        on_lost = getattr(lock, "on_lost", None)  # lockd locks only; other tooz backends cannot tell
        if on_lost is not None:
            on_lost(self._report_lost)
        return True

    def _report_lost(self) -> None:
        """Runs in the keepalive thread the moment the lease is lost (the lock's callback is dropped at release)."""
        self.lost = True
        LOG.error(
            "LOCK LOST: lockd lock %r (oslo external lock %r) is no longer held because the session lease of "
            "this process was lost; the code inside it is running unprotected from other hosts (this host's "
            "processes are still excluded by the lock file) and another host may now hold it",
            self.name,
            self.oslo_name,
        )

    def release(self) -> None:
        """Release the lockd lock, then the file lock. A lockd lock found no longer ours is logged at ERROR.

        Raises:
            threading.ThreadError: the lock is not held by this object (as fasteners).
        """
        if not self.acquired:
            raise threading.ThreadError("Unable to release an unacquired lock")
        lock, fd, self._lock, self._fd, self.acquired = self._lock, self._fd, None, None, False
        try:
            self._release_lockd(lock)
        finally:
            file_lock.unlock(fd)

    def _release_lockd(self, lock: Any) -> None:
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
                "may have run concurrently with another host",
                self.name,
                self.oslo_name,
                "" if token is None else f" (token {token})",
            )

    def __repr__(self) -> str:
        return f"<ExternalLock {self.name!r} at {self.path!r} acquired={self.acquired}>"


def external_lock(
    name: str, lock_file_prefix: str | None = None, lock_path: str | None = None
) -> fasteners.InterProcessLock:
    """Patched ``lockutils.external_lock``: oslo's file lock (same path, ``lock_path`` required as by oslo)
    that also takes the lockd lock named like the file; a name in the host-local scope gets the file lock alone.
    """
    oslo_lock = _original_external_lock()(name, lock_file_prefix, lock_path)
    lockd_name = lock_name(name, lock_file_prefix)
    if _scope.is_host_local(lockd_name):
        return oslo_lock
    return ExternalLock(oslo_lock.path, lockd_name, name)


def _original_external_lock() -> Any:
    """oslo's own ``external_lock``: the one the patch replaced, or (never patched) the one lockutils still has."""
    if _original is not None:
        return _original
    from oslo_concurrency import lockutils

    return lockutils.external_lock


def patch_lockutils(module: types.ModuleType | None = None, *, host_local: Iterable[str] | None = None) -> None:
    """From now on oslo.concurrency external locks also take lockd locks, except host-local ones (idempotent).

    ``host_local``: fnmatch patterns of lockd names (``lock_name()``, e.g. ``cinder-nvmetcli``) that stay oslo's
    file locks alone; ``[]`` for none. ``None`` reads ``$LOCKD_HOST_LOCAL_LOCKS``, and without it takes
    ``drivers_shim.scope.DEFAULT_HOST_LOCAL_LOCKS``. Calling again replaces the scope.

    The backend is the shim's (``drivers_shim.configure``, ``$LOCKD_BACKEND_URL``, a lockd URL in
    ``[coordination] backend_url``, or ``lockd serve``'s: see ``lockd.runtime``), looked up when the first
    external lock is taken: patching is cheap, cannot fail on a backend that is down, and may come before the
    config files are parsed.
    ``module`` is lockutils itself (the import hook passes it while it is still being imported).

    Raises:
        lockd.errors.UsageError: a bad ``host_local`` (a single string, a non-string or empty pattern) or a
            bad ``$LOCKD_HOST_LOCAL_LOCKS``; lockutils is then left as it was.
    """
    global _scope, _original
    scope = LockScope(host_local_from_env() if host_local is None else host_local)
    if module is None:
        from oslo_concurrency import lockutils as module
    with _patch_lock:
        _scope = scope  # before the swap: no lock may ever be taken under a scope not asked for
        if module.external_lock is not external_lock:
            _original = module.external_lock
            module.external_lock = external_lock
    LOG.info(
        "oslo.concurrency external locks now take a lockd lock after their file lock (drivers_shim.patch_lockutils), "
        "except host-local locks matching %s",
        ", ".join(scope.host_local) or "nothing",
    )


def unpatch_lockutils() -> None:
    """Put oslo's own ``external_lock`` back (locks taken while patched keep their lockd lock until released)."""
    from oslo_concurrency import lockutils

    with _patch_lock:
        if lockutils.external_lock is external_lock and _original is not None:
            lockutils.external_lock = _original


def is_patched() -> bool:
    """True while lockutils' external locks also take lockd locks."""
    from oslo_concurrency import lockutils

    return lockutils.external_lock is external_lock
