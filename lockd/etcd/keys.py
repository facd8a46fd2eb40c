"""Every etcd key lockd reads or writes, built in one place.

``/tooz/locks<name>`` is fixed by stock tooz (no separator): a lock is held while that key exists, so nothing
else may ever be written under it. lockd's own keys live under ``/lockd/``; names inside them are
percent-quoted so that no name's key range contains another name's keys (``a`` versus ``a/b``).
"""

from __future__ import annotations

import urllib.parse

TOOZ_LOCK_PREFIX = b"/tooz/locks"
LOCKD_PREFIX = b"/lockd/"
QUEUE_PREFIX = LOCKD_PREFIX + b"queue/"
MEMBER_PREFIX = LOCKD_PREFIX + b"members/"
STATUS_PREFIX = LOCKD_PREFIX + b"status/"
AUDIT_PREFIX = LOCKD_PREFIX + b"audit/"
EPOCH_KEY = LOCKD_PREFIX + b"epoch"  # the cluster's current epoch (lockd.epoch)
EPOCH_HISTORY_PREFIX = LOCKD_PREFIX + b"epochs/"  # every epoch it had, by id
EPOCH_ADOPTION_PREFIX = LOCKD_PREFIX + b"epoch-adoptions/"  # status records moved to a new epoch, by time

MAX_NAME_LENGTH = 512


def quote(part: str) -> bytes:
    """A name made safe to sit between two slashes of a key."""
    return urllib.parse.quote(part, safe="").encode("ascii")


def unquote(part: bytes) -> str:
    return urllib.parse.unquote(part.decode("ascii"))


def range_end(prefix: bytes) -> bytes:
    """The end of etcd's range [prefix, end) that holds exactly the keys starting with prefix."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def lock_key(name: str) -> bytes:
    return TOOZ_LOCK_PREFIX + name.encode("ascii")


def lock_name(key: bytes) -> str:
    return key[len(TOOZ_LOCK_PREFIX) :].decode("ascii", "replace")


def queue_prefix(name: str) -> bytes:
    return QUEUE_PREFIX + quote(name) + b"/"


def queue_key(name: str, waiter_id: str) -> bytes:
    return queue_prefix(name) + waiter_id.encode("ascii")


def queue_waiter(key: bytes) -> str:
    """The waiter id a queue key names (the part after the lock name)."""
    return key.rsplit(b"/", 1)[-1].decode("ascii", "replace")


def queue_name(key: bytes) -> str:
    """The lock name a queue key waits for."""
    return unquote(key[len(QUEUE_PREFIX) :].split(b"/", 1)[0])


def member_key(member: str) -> bytes:
    return MEMBER_PREFIX + quote(member)


def status_key(kind: str, resource_id: str) -> bytes:
    return STATUS_PREFIX + quote(kind) + b"/" + quote(resource_id)


def audit_key(name: str, revision: int) -> bytes:
    return AUDIT_PREFIX + quote(name) + b"/" + b"%020d" % revision


def audit_entry(key: bytes) -> tuple[str, int] | None:
    """(lock name, token) of a force-break's audit record key (the inverse of ``audit_key``); None for another."""
    name, sep, token = key[len(AUDIT_PREFIX) :].rpartition(b"/")
    if not sep or not token.isdigit():
        return None
    return unquote(name), int(token)
