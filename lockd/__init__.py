"""lockd: a fenced, FIFO, lease-loss-aware distributed lock manager for OpenStack Cinder, as a tooz backend."""

import warnings

# tooz imports futurist, which imports eventlet where it is installed (it is, beside Cinder). eventlet's
# many-line deprecation notice on stderr would break "one line on error" for every lockd command.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from lockd.errors import (  # noqa: E402
    BackendError,
    BackendTimeout,
    CertificateError,
    LockAcquireFailed,
    LockdError,
    LockLost,
    ResourceExhausted,
    SessionExpired,
    TransitionConflict,
    UsageError,
)

__all__ = [
    "BackendError",
    "BackendTimeout",
    "CertificateError",
    "LockAcquireFailed",
    "LockLost",
    "LockdError",
    "ResourceExhausted",
    "SessionExpired",
    "TransitionConflict",
    "UsageError",
]
