"""lockd: a fenced, FIFO, lease-loss-aware distributed lock manager for OpenStack Cinder, as a tooz backend."""

from lockd.errors import (
    BackendError,
    BackendTimeout,
    LockAcquireFailed,
    LockdError,
    LockLost,
    SessionExpired,
    TransitionConflict,
    UsageError,
)

__all__ = [
    "BackendError",
    "BackendTimeout",
    "LockAcquireFailed",
    "LockLost",
    "LockdError",
    "SessionExpired",
    "TransitionConflict",
    "UsageError",
]
