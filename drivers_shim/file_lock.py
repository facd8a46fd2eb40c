"""oslo's lock file, taken exactly as fasteners takes it, at a tenth of the cost: the host-local half of a patched lock.

Without the patch, ``lockutils.external_lock()`` is a ``fasteners.InterProcessLock``: it opens the file in
``lock_path`` (``open(path, "a")``, making missing directories), takes ``fcntl.lockf(LOCK_EX | LOCK_NB)`` and,
while another process holds it, retries after ``delay``, ``2 * delay``, ... at most ``max_delay`` apart until the
timeout. The patched lock must exclude such processes, so it takes the very same lock: a POSIX record lock on the
whole of the same file. That is all this module does.

Why not fasteners itself: it builds a text file object, a stopwatch and a retry helper per acquire and logs
twice. An uncontended acquire+release costs 54-69 us with fasteners and 11 us with the same system calls made
directly (``os.open`` + ``lockf`` + ``lockf`` + ``os.close``; ``bench/file_lock_cost.py``); beside a lockd lock,
fasteners' version made the patched lock 8-9 % slower than before, past the 5 % the patch may cost
(docs/benchmarks.md, "Patched oslo locks").

The locking rules are fasteners' (and the kernel's): a process's lock is held until it unlocks or closes that
descriptor; the lock belongs to the process, so threads of one process are kept apart by oslo's in-process lock,
as without the patch. POSIX only (fcntl), as Cinder's hosts are.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

#: ``open(path, "a")``, as fasteners opens it: never truncates, never follows the file's contents.
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
_HELD_ELSEWHERE = (errno.EACCES, errno.EAGAIN)


class FileLockError(OSError):
    """The lock file could not be opened or locked for another reason than another holder."""


def lock(path: bytes, blocking: bool, delay: float, max_delay: float, deadline: float | None) -> int | None:
    """Lock ``path``: the open descriptor that holds it, or None when it is held elsewhere and the wait ran out.

    ``blocking=False`` tries once; otherwise polls as fasteners does (``delay``, ``2 * delay``, ... capped at
    ``max(delay, max_delay)``) until ``deadline`` (``time.monotonic()``; None: for ever).
    Raises:
        FileLockError: the file cannot be opened or locked (permissions, a missing mount...); nothing is held.
    """
    fd = _open(path)
    try:
        attempts = 0
        while True:
            attempts += 1
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except OSError as exc:
                if exc.errno not in _HELD_ELSEWHERE:
                    raise FileLockError(exc.errno, f"cannot lock {os.fsdecode(path)}: {exc.strerror}") from exc
            left = None if deadline is None else deadline - time.monotonic()
            if not blocking or (left is not None and left <= 0):
                os.close(fd)
                return None
            pause = min(attempts * delay, max(delay, max_delay))
            time.sleep(pause if left is None else min(pause, left))
    except BaseException:
        os.close(fd)
        raise


def unlock(fd: int) -> None:
    """Let the lock go and close its descriptor (closing alone would let it go too; unlocking first says so)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open(path: bytes) -> int:
    try:
        try:
            return os.open(path, _FLAGS, 0o666)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path) or b".", exist_ok=True)  # as fasteners makes a missing lock_path
            return os.open(path, _FLAGS, 0o666)
    except OSError as exc:
        raise FileLockError(exc.errno, f"cannot open lock file {os.fsdecode(path)}: {exc.strerror}") from exc
