"""Every exception lockd raises, in one tree, so callers can catch by what they must do next.

LockdError                      (base; also a tooz.ToozError so tooz callers catch it)
├── UsageError                  the caller's fault: bad name, URL, option, or a TLS file that cannot be loaded
│                               when the client is made (ValueError too; HTTP 422, exit 2)
├── BackendError                etcd failed or is unreachable (tooz.ToozConnectionError; HTTP 503, exit 1)
│   ├── BackendTimeout          no answer within request_timeout from any endpoint
│   │   └── DeadlineExceeded    the caller's deadline (a timed acquire's) passed before etcd answered
│   ├── ResourceExhausted       this process is out of descriptors or memory for a new connection
│   └── CertificateError        every member refused a TLS handshake over a certificate; ``.option`` and
│                               ``.path`` name the file to fix (ca_cert: it does not verify etcd's certificate;
│                               cert_cert: etcd refused this client's certificate). Not retried by lock waiters
├── LockAcquireFailed           a lock could not be taken (also tooz's LockAcquireFailed)
├── LockLost                    a held lock's lease ran out or the lock was broken while it was held
├── SessionExpired              the session lease is gone; the next acquire starts a new session
└── TransitionConflict          a status was not in the expected set (``.current`` says what it is)
"""

from __future__ import annotations

from tooz import ToozError
from tooz.coordination import LockAcquireFailed as _ToozLockAcquireFailed
from tooz.coordination import OperationTimedOut, ToozConnectionError


class LockdError(ToozError):
    """Base of every lockd error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(LockdError, ValueError):
    """The caller passed something lockd cannot accept; nothing was changed."""


class BackendError(LockdError, ToozConnectionError):
    """etcd answered with an error or could not be reached; the operation may not have happened."""

    def __init__(self, message: str, endpoint: str | None = None) -> None:
        super().__init__(f"{message} ({endpoint})" if endpoint else message)
        self.endpoint = endpoint


class BackendTimeout(BackendError, OperationTimedOut):
    """No etcd endpoint answered in time; whether a write landed is unknown."""


class DeadlineExceeded(BackendTimeout):
    """The caller's deadline passed before etcd answered, so the request was not sent (again): whether an earlier
    send of a write landed is unknown, as for any timeout."""


class ResourceExhausted(BackendError):
    """The process could not open a connection (EMFILE, ENOMEM...): no member would do better, so nothing fails
    over; the request was not sent. Locks already held keep their lease on the session's own connection."""


class CertificateError(BackendError):
    """No member completed a TLS handshake because of a certificate, and the files on disk are the ones that failed:
    waiting will not help, a person must fix the file ``path`` (the URL option ``option``: ``ca_cert`` when etcd's
    certificate does not verify with it, ``cert_cert`` when etcd refused this client's certificate and key).

    The client keeps trying at each new connection (a renewed file is loaded then, lockd.etcd.tls), so a held
    lock survives a fix made within its lease TTL; a waiting ``acquire`` ends with this error instead.
    """

    def __init__(self, message: str, option: str, path: str | None, endpoint: str | None = None) -> None:
        super().__init__(message, endpoint)
        self.option = option
        self.path = path


class LockAcquireFailed(LockdError, _ToozLockAcquireFailed):
    """The lock was not taken (held elsewhere past the wait, or etcd failed); the guarded code did not run."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class LockLost(LockdError):
    """The lock stopped being ours while the guarded code ran: its work was not protected."""

    def __init__(self, message: str, name: str | None = None, token: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.token = token


class SessionExpired(LockdError):
    """The session's lease expired or was revoked; locks taken on it are gone."""


class TransitionConflict(LockdError):
    """A compare-and-set found a status outside ``expected``; ``current`` is what it found (None = absent).

    ``reason`` says why (lockd.status: "conflict", "fenced" by a newer token, "not_owner" of the fence lock).
    """

    def __init__(self, message: str, current: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.current = current
        self.reason = reason
