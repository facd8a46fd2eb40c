"""The lockd lock protocol: a fair, fenced mutex on etcd that stock tooz clients also respect.

Theory of operation
-------------------
Keys (see lockd.etcd.keys):
  ``/tooz/locks<name>``               exists while the lock is held, on the holder's session lease. This is
                                      stock tooz's key, so tooz's ``etcd3+http`` clients and lockd exclude each
                                      other. lockd's value is JSON naming the holder; tooz's is 16 random bytes.
  ``/lockd/queue/<name>/<waiter>``    one per lockd waiter, on its session lease. Queue order = create_revision.
                                      Its value is the holder value the waiter would put (so a releaser can
                                      grant it the lock), prefixed ``granted:`` once it was granted. A waiter
                                      that gets the lock keeps its entry until it releases.

Acquire:
  1. One txn: if the lock key is absent *and* the queue is empty, put the lock key (uncontended: one round trip).
     Otherwise put our queue key and read the lock key and the queue's two newest entries (ours, just put, and
     the one ahead of it), all in the same txn. A name whose last acquire in this process did not have to queue
     sends that txn without the enqueue (``_Queued``): etcd commits the smaller txn faster (bench/txn_shapes.py),
     and only when that guess is wrong does the enqueue txn follow, one round trip later.
  2. Wait, with two watches on the client's one stream: the newest older queue entry (or, if none, the lock key:
     a holder that came by the fast path, or a stock tooz client) for deletion, and our own entry for its grant
     mark. etcd tells at which revision each watch began; only when something was written between the txn that
     showed us our state and that revision does one read of both keys cover the gap. No herd: each waiter wakes
     only when its predecessor leaves or when it is granted the lock.
  3. Granted: we hold, at the grant's revision. Otherwise take: one txn "lock key absent, no older queue key,
     our queue key still there" -> put the lock key. On failure the same txn returns fresh state (our entry,
     the newest entry older than ours, the lock key: which names us if a grant was missed) and we go back to 2.
  Each step reads at most two queue entries, whatever the queue's length: with the whole queue read at each
  step, N waiters cost O(N^2) keys decoded in the waiting process, which starved 1,000 waiting threads of CPU.
  4. Before saying "held", the session's lease deadline must still be ahead: a take whose answer arrived
     after it (the process frozen between send and answer) was made on a lease that is being revoked, and
     another client may hold the lock already. That take is dropped and the acquire goes on, on a new session.
Release:
  A holder that came through the queue (the lock is contended) grants the lock to the oldest lockd waiter in
  its release: one txn "the lock key is still at our token and the successor's entry is the one we know" puts
  the lock key with the successor's holder value on the successor's lease, marks its entry granted and deletes
  ours. Who the successor is comes without a read on the handoff: the take txn reads the oldest entries behind
  us, and a grant mark passes on the ones known to follow (up to ``_CHAIN``); only when none is known does
  the release read the queue first. The successor's watch on its own entry wakes it holding: a handoff is one commit
  and one watch event, as etcd's own concurrency.Mutex pays, and the lock key exists at every instant, so stock
  tooz clients keep excluding. Otherwise (a holder that took a free lock, no lockd successor, one of an older
  lockd whose entry has no value, its lease just gone), one txn deletes the lock key (if it is still at our
  token) and our queue entry; the next waiter watches for that and takes. A releasing worker that asks again
  finds the queue non-empty and queues at the back: FIFO among lockd waiters. Stock tooz clients do not queue;
  they may take the key between two lockd holders when no lockd waiter was granted it. Freeing a lock from
  outside (force-break, lockd.force_break) deletes the holder's queue entry too.

Fencing token: the revision at which the lock key came to name its holder, i.e. its mod_revision while held
(equal to its create_revision when the lock was taken free; a grant moves only the mod_revision). etcd revisions
only grow, so each acquisition of a name gets a larger token than every earlier one. Release is "delete (or
grant) if mod_revision == token", so a holder that lost its lock cannot delete or hand over its successor's.

Ambiguity: the client repeats a request on another member after a timeout, so a put may land twice or a
take may succeed without us seeing the answer. Queue keys are named by session lease and a per-acquire id
(a repeated put keeps the original create_revision), and the holder value carries that id, so a retried
txn that finds the lock key holding our id knows it is ours. A repeated release whose first send landed
fails its compare; it was ours when no force-break of our token is recorded and our lease is still confirmed
(nothing else deletes a lockd holder's key while its lease lives: see lockd.force_break).

Epoch: tokens are comparable only within one lifetime of the cluster's data (a rebuilt cluster starts its
revisions again); the session learns the cluster's epoch and lock objects carry it beside the token
(lockd.epoch).

Token: the fencing token of the latest acquisition stays on the object after the lock is lost (lease run
out, broken) and is cleared only by ``release()``. A holder that was paused past its lease and then writes
with ``fence=lock.token`` must present its old token and be refused, not present None and write unfenced.

Threads: a lock object may be shared, as tooz's own test suite shares them. A local gate (a plain lock, green
under eventlet) is held from a successful acquire to its release, so a second thread's ``acquire`` on the
same object waits for that release in-process (or returns False when it may not wait) and never queues in
etcd behind its own object.

Deadlines: a timed acquire's deadline goes with every request it makes (the enqueue, reads, the take, a new
session's lease grant and announcement): none is sent once the deadline has passed (lockd.etcd.client), so the
call ends by its deadline plus the one send under way then, however long etcd stays unreachable and however often
the session is lost meanwhile. Then it returns False, as any wait that runs out, once etcd answered its enqueue;
if etcd answered nothing of the call, it raises DeadlineExceeded (a BackendTimeout). What it leaves in etcd is
cleaned as after any failure: a queue entry whose wait ran out is deleted at once (within one request timeout),
one left by a request under way at the deadline is deleted by the session's keepalive as soon as etcd answers (or
goes with the lease). Untimed acquires (``blocking=True``) keep waiting, on new sessions, as long as it takes,
except when every member refuses the client's TLS files (CertificateError, naming the file): only a person can fix
that, so the wait ends with it, within one handshake per member of etcd answering (lockd.etcd.tls).

Not guaranteed: mutual exclusion in real time against a holder paused past its lease (see lockd.session).
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from lockd.errors import (
    BackendError,
    CertificateError,
    DeadlineExceeded,
    ResourceExhausted,
    SessionExpired,
    UsageError,
)
from lockd.etcd import keys
from lockd.etcd.client import (
    GRPC_NOT_FOUND,
    EtcdClient,
    EtcdRequestError,
    KeyValue,
    TxnResult,
    cmp_create,
    cmp_mod,
    cmp_value,
    op_delete,
    op_put,
    op_range,
)
from lockd.etcd.watch import Inbox, StreamBroken, Watch
from lockd.session import Session

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The template of the lock being acquired in this context (drivers_shim.synchronized sets it), recorded in the
#: holder value so the admin API can group contention by template and name a deadlock's code paths.
TEMPLATE: contextvars.ContextVar[str | None] = contextvars.ContextVar("lockd_lock_template", default=None)


#: How a granting release marks the successor's queue entry: this, then the waiters known to come after it, oldest
#: first, so the successor can grant in its turn without a read: ``_PACKED`` and raw deflate of one line per waiter,
#: its queue key and holder value (neither holds a space or a newline: quoted key, compact JSON). A JSON list of
#: [key, value] pairs (lockd before packing) is still read. Packed, seven waiters' ~2 KB are ~0.5 KB, and the
#: grant txn carrying them commits faster: its request is what etcd logs and what the successor's event carries.
_GRANTED = b"granted:"
_PACKED = b"z"
_DEFLATE = (1, zlib.DEFLATED, -12, 4)  # fast, a 4 KiB window (a mark is smaller): 12 us to pack seven waiters
#: How many waiters one read learns and a grant passes on; a read is needed once per this many handoffs at most.
_CHAIN = 8
_OLDEST = {"limit": str(_CHAIN + 1), "sort_target": "CREATE", "sort_order": "ASCEND"}
#: After the entry ahead of us went, how long to wait for a grant that came in the same txn (see _wait_for_turn).
#: Its event, when etcd serves our watch promptly, follows the delete's within 2 ms (271 of 280 such handoffs in
#: a quiet contention bench; the other 9 came 7-71 ms late: see _wait_for_turn); then one read of our entry says
#: whether the grant came.
_GRANT_GRACE = 0.002


class _Queued:
    """The lock names whose latest acquire in this process had to queue (at most ``limit``, the oldest forgotten).

    A hint, never a fact anything rests on: a name not in it is tried with the lean txn first (see Acquire in the
    module doc), so an uncontended name pays for no enqueue it does not make, and a contended one pays for no
    failed try. Shared by every lock object of the process, as Cinder makes a new one for each call.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._names: dict[str, None] = {}
        self._limit = limit
        self._mutex = threading.Lock()

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def add(self, name: str) -> None:
        with self._mutex:
            self._names[name] = None
            if len(self._names) > self._limit:
                del self._names[next(iter(self._names))]

    def discard(self, name: str) -> None:
        with self._mutex:
            self._names.pop(name, None)


_QUEUED = _Queued()


def _mark(successors: list[tuple[bytes, bytes]]) -> bytes:
    """A granted entry's value: the mark and the waiters known to follow it (see Mutex._grant)."""
    if not successors:
        return _GRANTED
    packer = zlib.compressobj(*_DEFLATE)
    lines = b"\n".join(key + b" " + value for key, value in successors[:_CHAIN])
    return _GRANTED + _PACKED + packer.compress(lines) + packer.flush()


def _successors(marked: bytes) -> list[tuple[bytes, bytes]]:
    """The waiters a grant mark passes on (none if it cannot be read: the next release reads the queue)."""
    body = marked[len(_GRANTED) :]
    try:
        if body.startswith(_PACKED):
            pairs = [line.split(b" ", 1) for line in zlib.decompress(body[1:], _DEFLATE[2]).split(b"\n")]
            return [(key, value) for key, value in pairs]
        known = json.loads(body) if body else []
        return [(key.encode("ascii"), value.encode("ascii")) for key, value in known]
    except (ValueError, TypeError, AttributeError, UnicodeError, zlib.error):
        return []


def _close(watches: list[Watch]) -> None:
    for watch in watches:
        watch.close()


def _lease_of(waiter: str) -> int | None:
    """The session lease a waiter id names (``<lease hex>-<random>``, see Mutex._acquire_on)."""
    try:
        return int(waiter.split("-", 1)[0], 16)
    except ValueError:
        return None


def validate_name(name: str | bytes) -> str:
    """Lock names are 1..512 printable ASCII characters (Cinder's names are ASCII).

    Raises:
        UsageError (a ValueError): the name is empty, too long or has other characters.
    """
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            raise UsageError("lock name must be printable ASCII") from None
    if not isinstance(name, str) or not name:
        raise UsageError("lock name must be a non-empty string")
    if len(name) > keys.MAX_NAME_LENGTH:
        raise UsageError(f"lock name is {len(name)} characters; at most {keys.MAX_NAME_LENGTH} are allowed")
    if not (name.isascii() and name.isprintable()):  # " " to "~": the ASCII characters isprintable() admits
        raise UsageError(f"lock name {name[:60]!r} must be printable ASCII")
    return name


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, decoded from the lock key's value (None fields for a stock tooz holder)."""

    member: str | None
    host: str | None
    pid: int | None
    acquired_at: float | None
    waiter: str | None
    #: The thread (under eventlet, the green thread) that asked: an owner in the wait-for graph (lockd.api.waits)
    #: is a thread, since one thread waits for one lock at a time while its process may hold many.
    thread: int | None = None
    #: The lock's template where the caller said it (drivers_shim.synchronized), else None.
    template: str | None = None

    @classmethod
    def decode(cls, value: bytes) -> Holder:
        try:
            data = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or "waiter" not in data:
            return cls(None, None, None, None, None)  # a stock tooz holder: 16 random bytes
        thread, template = data.get("thread"), data.get("template")
        return cls(
            data.get("member"),
            data.get("host"),
            data.get("pid"),
            data.get("acquired_at"),
            data["waiter"],
            thread if isinstance(thread, int) else None,
            template if isinstance(template, str) else None,
        )

    @property
    def is_lockd(self) -> bool:
        return self.waiter is not None


@dataclass
class _State:
    """What one txn told us: our queue entry and the newest one ahead of it, if any (oldest first; the rest of
    the queue is not read), the lock key, and the revision it was read at."""

    queue: list[KeyValue]
    lock: KeyValue | None
    revision: int


class Mutex:
    """One lock name as seen by one lock object; threads may share it (see "Threads" in the module doc)."""

    def __init__(self, name: str, session_provider: Callable[[float | None], Session], member: str) -> None:
        """``session_provider(deadline)``: the live session, or a new one whose requests respect ``deadline``."""
        self.name = validate_name(name)
        self.key = keys.lock_key(self.name)
        self._queue_prefix = keys.queue_prefix(self.name)
        self._queue_end = keys.range_end(self._queue_prefix)
        self._sessions = session_provider
        self._member = member
        self.token: int | None = None
        self.session: Session | None = None
        self._guard = threading.Lock()
        self._gate = threading.Lock()  # held from a successful acquire until its release
        self._gate_owner: int | None = None  # the thread that took the gate
        self._sent_values: list[bytes] = []
        self._queue_key: bytes | None = None  # kept while held if we came through the queue
        self._next: list[tuple[bytes, bytes]] = []  # waiters known to follow us (queue key, holder value)
        self._asked = False  # the running acquire's enqueue was answered (one acquire at a time: the gate)

    # -- public -----------------------------------------------------------------------------------------------

    def acquire(self, blocking: bool | float = True) -> bool:
        """Take the lock: ``blocking`` True waits forever, False tries once, a number waits that many seconds.

        Returns True when held (``token`` is set), False when the wait ran out, and False at once when the
        calling thread already holds it through this object (waiting would deadlock). Another thread that
        holds it through this object is waited for in-process, within the same ``blocking`` budget.
        A timed wait ends by its deadline plus at most one send in flight then, whatever the network does (see
        "Deadlines" in the module doc).
        Raises:
            BackendError: etcd could not be reached; nothing is held and no queue entry is left behind.
            DeadlineExceeded: (a BackendTimeout) the wait ran out before etcd answered any request of this call.
            CertificateError: (a BackendError) every member refused a TLS handshake over this client's CA file or
                client certificate, which a person must fix (the error names the file); an untimed wait ends too.
        """
        if blocking is True:
            deadline = None
        elif blocking is False or blocking is None:
            deadline = time.monotonic()
        else:
            deadline = time.monotonic() + max(0.0, float(blocking))
        if not self._enter_gate(deadline):
            return False
        try:
            # No time left (non-blocking, or spent waiting at the gate): one try, without queueing.
            won = self._acquire_until(deadline, try_once=deadline is not None and time.monotonic() >= deadline)
        except BaseException:
            self._leave_gate()
            raise
        if not won:
            self._leave_gate()
        return won

    def release(self) -> bool:
        """Delete the lock key if it is still ours. False when it was not (lost, broken, never held).

        Raises:
            BackendError: etcd did not answer; the session deletes the key when it can (or the lease ends it).
                The object is released either way.
        """
        token, session, queue_key, successors = self._forget()
        if token is None or session is None:
            return False
        try:
            return self._delete_own_key(session, token, queue_key, successors)
        finally:
            self._leave_gate()

    def held(self) -> bool:
        """Local view: acquired and its session lease still confirmed. No etcd round trip."""
        session = self.session
        return self.token is not None and session is not None and session.alive()

    def is_still_owner(self) -> bool:
        """Ask etcd whether the lock key is still the one we created (a force-break makes this False)."""
        session, token = self.session, self.token
        if token is None or session is None or not session.alive():
            return False
        try:
            kv = session.client.get(self.key)
        except BackendError:
            return session.alive()  # etcd unreachable: the confirmed lease is the best evidence we have
        return kv is not None and kv.mod_revision == token

    # -- the local gate ---------------------------------------------------------------------------------------

    def _enter_gate(self, deadline: float | None) -> bool:
        """Take the object's gate before etcd: False when another user of this object keeps it past ``deadline``.

        The thread that holds the gate gets False at once, unless its hold was lost (lease gone): then, as
        with stock tooz, it may acquire again, and that hold's token is dropped for the new one.
        """
        me = threading.get_ident()
        if self._gate_owner == me and self._gate.locked():
            if self.held() or self.token is None:
                return False
            self._forget()  # the lost hold's keys went with its lease
            return True
        if deadline is None:
            self._gate.acquire()
        elif not self._gate.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        self._gate_owner = me
        return True

    def _leave_gate(self) -> None:
        self._gate_owner = None
        self._gate.release()

    def _forget(self) -> tuple[int | None, Session | None, bytes | None, list[tuple[bytes, bytes]]]:
        """Clear the hold (token, session, queue key, known successors) and return what it was; one caller gets
        it, others None."""
        with self._guard:
            hold = self.token, self.session, self._queue_key, self._next
            self.token = self.session = self._queue_key = None
            self._next = []
        return hold

    # -- protocol -----------------------------------------------------------------------------------------------

    def _acquire_until(self, deadline: float | None, try_once: bool) -> bool:
        self._asked = False
        while True:
            session: Session | None = None
            try:
                session = self._sessions(None if try_once else deadline)
                if self._acquire_on(session, deadline, try_once):
                    if session.alive():
                        return True
                    # The take landed, but its answer came back after the lease deadline (the process was
                    # frozen, or etcd's answers were held up): the session is lost, its lease revoked, and
                    # someone else may hold the lock by now. Not a hold; try again on a new session.
                    LOG.warning("lock %r was taken on a session lost before the answer came; again", self.name)
                    self._forget()
            except SessionExpired:
                LOG.warning("session lost while waiting for %r; queueing again on a new session", self.name)
            except EtcdRequestError as exc:
                if exc.code != GRPC_NOT_FOUND or session is None:
                    raise
                session.lease_gone()  # our lease went before the keepalive heard: again, on a new session
                LOG.warning("session lease gone while asking for %r; queueing again on a new session", self.name)
            except DeadlineExceeded:
                if self._asked:
                    return False  # etcd answered this call, then the wait ran out: as any wait that runs out
                raise  # nothing could be asked at all: as unreachable
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _delete_own_key(
        self, session: Session, token: int, queue_key: bytes | None, successors: list[tuple[bytes, bytes]]
    ) -> bool:
        """The release: grant the lock to the next lockd waiter if there is one (one commit from holder to
        holder), else delete our key. True when the lock was ours (now, or in an earlier send whose answer was
        lost)."""
        granted = self._grant(session, token, queue_key, successors)
        if granted is None and successors:
            granted = self._grant(session, token, queue_key, [])  # the ones we knew of left: read who is there
        if granted is not None:
            return granted
        # Our queue entry (if we came through the queue) goes in the same txn, whatever the compare says:
        # the successor watching it wakes exactly once, and a lost lock leaves no entry behind.
        leave = [op_delete(queue_key)] if queue_key else []
        try:
            result = session.client.txn([cmp_mod(self.key, token)], [op_delete(self.key), *leave], leave)
        except BackendError:
            session.delete_later((self.key, [cmp_mod(self.key, token)]), *[(k, []) for k in [queue_key] if k])
            raise
        if result.succeeded:
            return True
        # Only a repeated txn can have deleted our key in an earlier send, so only then is the break record read
        # (one more round trip, off the common path). No break of this token recorded and our lease confirmed:
        # nothing else removes a lockd holder's key, so the first send did.
        if result.repeated and session.alive() and session.client.get(keys.audit_key(self.name, token)) is None:
            return True
        LOG.warning("lock %r (token %d) was no longer ours at release", self.name, token)
        return False

    def _grant(
        self, session: Session, token: int, queue_key: bytes | None, successors: list[tuple[bytes, bytes]]
    ) -> bool | None:
        """Hand the lock to the oldest lockd waiter in the release itself; None when there is none to hand it to
        (no waiter, one of an older lockd that takes for itself, the one we knew of left): then the caller reads
        again or deletes our key as before. A read or grant that etcd did not answer raises BackendError, with our
        key left to the session to delete: a release makes at most one request that waits on every member.

        Only a holder that came through the queue tries (it waited, so the lock is contended); a holder that took
        a free lock at once releases as before, with no read. The successor is the first of ``successors`` (what
        our own grant told us), or, when we know none, the oldest entry one read finds (that read learns up to
        ``_CHAIN`` of them). One txn, "the lock key is still at our token and the successor's entry is what we
        know", puts the lock key with the successor's holder value on the successor's lease, marks the
        successor's entry granted, passing on the waiters known to follow it (so it need not read either), and
        deletes our entry. The lock key exists at every instant, so stock tooz clients keep excluding; its
        create_revision stays, its mod_revision (the token) moves.
        """
        if queue_key is None:
            return None
        client = session.client
        if not successors:
            try:
                entries, _ = client.range(self._queue_prefix, self._queue_end, **_OLDEST)
            except BackendError:
                # Every member failed the read already: a delete now would most likely wait as long again, so the
                # release ends here, as an unanswered release does (the session deletes our key when it can).
                session.delete_later((self.key, [cmp_mod(self.key, token)]), (queue_key, []))
                raise
            successors = [(kv.key, kv.value) for kv in entries if kv.key != queue_key]
        if not successors:
            return None
        (key, value), rest = successors[0], successors[1:]
        waiter = keys.queue_waiter(key)
        lease = _lease_of(waiter)
        if Holder.decode(value).waiter != waiter or lease is None:
            return None  # an entry without a holder value: a waiter of an older lockd, which takes for itself
        compare = [cmp_mod(self.key, token), cmp_value(key, value)]
        hand_over = [op_put(self.key, value, lease), op_put(key, _mark(rest), lease), op_delete(queue_key)]
        try:
            result = client.txn(compare, hand_over, [op_range(self.key)])
        except EtcdRequestError:
            return None  # e.g. the successor's lease expired just now ("requested lease not found")
        except BackendError:
            # Unanswered: granted or not, the session deletes our key if it is still ours, and our entry.
            session.delete_later((self.key, [cmp_mod(self.key, token)]), (queue_key, []))
            raise
        if result.succeeded:
            return True
        lock = result.kvs(0)
        if result.repeated and lock and lock[0].value == value and lock[0].mod_revision > token:
            return True  # our first send granted it; its answer was lost
        return None

    def _holder_value(self, waiter: str) -> bytes:
        """The lock key's value for one put; remembered so an unanswered put can be undone."""
        record: dict[str, Any] = {
            "member": self._member,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "thread": threading.get_ident(),
            "acquired_at": time.time(),
            "waiter": waiter,
        }
        template = TEMPLATE.get()
        if template is not None:
            record["template"] = template
        value = json.dumps(record, separators=(",", ":")).encode()
        self._sent_values.append(value)
        return value

    def _acquire_on(self, session: Session, deadline: float | None, try_once: bool) -> bool:
        waiter = f"{session.lease_id:x}-{uuid.uuid4().hex[:16]}"
        queue_key = keys.queue_key(self.name, waiter)
        self._sent_values = []
        try:
            return self._try_or_wait(session, waiter, queue_key, deadline, try_once)
        except BaseException as exc:
            # An error (etcd unreachable, a timeout whose write may still land, an interrupt) must not leave
            # a lock key or queue entry behind that nobody will release while the session lives on. After an
            # etcd failure, and in a timed acquire (whose deadline holds whatever etcd does), the cleanup is left
            # to the keepalive thread rather than waiting on etcd again now.
            later = isinstance(exc, BackendError) or deadline is not None
            self._abandon(session.delete_later if later else session.delete, queue_key)
            raise

    def _try_or_wait(
        self, session: Session, waiter: str, queue_key: bytes, deadline: float | None, try_once: bool
    ) -> bool:
        client = session.client
        # The queue entry carries the value the lock key gets when we hold, so a releaser can grant it to us.
        value = self._holder_value(waiter)
        put_lock = op_put(self.key, value, session.lease_id)
        no_holder_no_queue = [cmp_create(self.key, 0), cmp_create(self._queue_prefix, 0, end=self._queue_end)]
        read_lock = op_range(self.key)
        if try_once or self.name not in _QUEUED:
            # The one try is sent whatever the deadline (it is now, or already spent at the gate).
            result = client.txn(no_holder_no_queue, [put_lock], [read_lock], deadline=None if try_once else deadline)
            self._asked = True
            if result.succeeded:
                return self._won(session, result.revision)
            lock = result.kvs(0)
            if lock and self._won_if_mine(session, lock[0], waiter, None):
                return True  # a repeated send whose first landed
            if try_once:
                return False
            _QUEUED.add(self.name)  # held, or others queue: from now on enqueue at once

        # Our entry is the newest (put in this very txn), so the two newest are ours and the one ahead of us.
        newest_two = self._read_queue(limit=2)
        result = client.txn(
            no_holder_no_queue,
            [put_lock],
            [op_put(queue_key, value, session.lease_id), newest_two, read_lock],
            deadline=deadline,
        )
        self._asked = True
        if result.succeeded:
            _QUEUED.discard(self.name)  # free after all: the next acquire tries the lean txn first
            return self._won(session, result.revision)
        _QUEUED.add(self.name)
        tail = result.kvs(1)
        mine = next((kv for kv in tail if kv.key == queue_key), None)
        if mine is None:
            # Only a repeated txn gets here: its first send put our entry, which keeps that older create_revision
            # while newer ones came after it. Read our place by that revision instead.
            mine = client.get(queue_key, deadline=deadline)
            if mine is None:
                raise SessionExpired(f"queue entry for {self.name!r} is gone")
            state = self._state(session, queue_key, mine, deadline)
            return self._wait_in_queue(session, waiter, queue_key, value, state, deadline)
        state = _State(sorted(tail, key=lambda kv: kv.create_revision), (result.kvs(2) or [None])[0], result.revision)
        return self._wait_in_queue(session, waiter, queue_key, value, state, deadline)

    def _state(self, session: Session, queue_key: bytes, mine: KeyValue, deadline: float | None) -> _State:
        """Our entry, the newest entry ahead of it and the lock key, read in one txn."""
        reads = self._state_reads(queue_key, mine.create_revision)
        return self._state_from(session.client.txn([], reads, deadline=deadline))

    def _state_reads(self, queue_key: bytes, my_revision: int) -> list[dict[str, Any]]:
        """The reads of a waiter's state: its entry, the newest entry ahead of it, the lock key."""
        return [op_range(queue_key), self._read_queue(limit=1, before=my_revision), op_range(self.key)]

    @staticmethod
    def _state_from(result: TxnResult) -> _State:
        queue = sorted([*result.kvs(1), *result.kvs(0)], key=lambda kv: kv.create_revision)
        return _State(queue, (result.kvs(2) or [None])[0], result.revision)

    def _wait_in_queue(
        self, session: Session, waiter: str, queue_key: bytes, value: bytes, state: _State, deadline: float | None
    ) -> bool:
        while True:
            if state.lock is not None and self._won_if_mine(session, state.lock, waiter, queue_key):
                return True
            mine = next((kv for kv in state.queue if kv.key == queue_key), None)
            if mine is None or not session.alive():
                # Our queue entry went with the lease (or was removed by an operator): start over.
                raise SessionExpired(f"queue entry for {self.name!r} is gone")
            older = [kv for kv in state.queue if kv.create_revision < mine.create_revision]
            if older or state.lock is not None:
                if deadline is not None and time.monotonic() >= deadline:
                    return self._leave_queue(session, queue_key, value)
                ahead = older[-1].key if older else self.key
                outcome = self._wait_for_turn(session, ahead, queue_key, state.revision, deadline)
                if isinstance(outcome, KeyValue):  # the holder granted us the lock in its release, at that revision
                    return self._won(session, outcome.mod_revision, queue_key, _successors(outcome.value))
                if outcome == "timeout":
                    return self._leave_queue(session, queue_key, value)
                if not session.alive():
                    raise SessionExpired(f"session lost while waiting for {self.name!r}")
            # Nothing to wait for, or the key we watched went (a release, a waiter giving up): usually we are
            # next, so take at once; a failed take returns the fresh state in the same round trip.
            take = functools.partial(self._take, session, waiter, queue_key, mine.create_revision, deadline)
            taken = self._through_failover(session, deadline, take)
            if taken is None:
                return True
            state = taken

    def _through_failover(self, session: Session, deadline: float | None, call: Callable[[], _T]) -> _T:
        """Repeat ``call`` while etcd fails but our lease is still confirmed, so a waiter keeps its place.

        An election or a dead member makes every request fail for a moment; the queue entry lives on the
        session lease, so while that lease is confirmed there is no reason to give up the place. A repeated
        take is safe: if the first landed unanswered, the lock key carries our waiter id.
        Raises:
            SessionExpired: the lease was lost meanwhile (the caller queues again on a new session).
            ResourceExhausted: the process is out of descriptors or memory; not retried.
            CertificateError: every member refused this client's TLS files; not retried.
            BackendError: the wait's deadline passed first.
        """
        while True:
            try:
                return call()
            except (ResourceExhausted, CertificateError):
                # The process (out of descriptors) or its TLS files (every member refused them), not etcd: waiting
                # here would only spin, so the caller's acquire fails with the reason. (A renewed file is loaded at
                # the next connection; the session's keepalive keeps trying meanwhile, so held locks may survive.)
                raise
            except BackendError as exc:
                if not session.alive():
                    raise SessionExpired(f"session lost while waiting for {self.name!r}") from exc
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                LOG.warning("waiting for %r: %s; retrying while the session lease holds", self.name, exc)
                session.lost.wait(0.1)

    def _read_oldest(self) -> dict[str, Any]:
        """The queue's ``_CHAIN + 1`` oldest entries with their values: a holder's own and those who follow."""
        return op_range(self._queue_prefix, self._queue_end, **_OLDEST)

    def _read_queue(self, limit: int, before: int | None = None) -> dict[str, Any]:
        """The ``limit`` newest queue entries (created before revision ``before``, if given), keys only.

        etcd filters and sorts the whole range on its side (cheap in Go); what comes back is ``limit`` keys.
        """
        options: dict[str, Any] = {"keys_only": True, "sort_target": "CREATE", "sort_order": "DESCEND"}
        if before is not None:
            options["max_create_revision"] = str(before - 1)
        return op_range(self._queue_prefix, self._queue_end, limit=str(limit), **options)

    def _wait_for_turn(
        self, session: Session, ahead: bytes, queue_key: bytes, seen: int, deadline: float | None
    ) -> str | KeyValue:
        """Block until the key ``ahead`` of us is deleted or the holder grants us the lock: our entry as the grant
        marked it (its mod_revision is our token), else "deleted", "timeout", or "broken" (re-check: member or
        session failed).

        Two watches on one stream, both from now: the key ahead of us (deletes only), and our own queue entry (puts
        only), which a granting release marks. ``seen`` is the revision of the state that showed ``ahead`` present
        and our entry not granted; etcd says at which revision each watch began (``Watch.created_at``), and when
        neither began after ``seen`` nothing can have been missed. Otherwise (something was written in between:
        usually another waiter queueing) one read of both keys covers the gap. (A watch from ``seen`` itself would
        never need the read, but etcd serves a watch that starts in the past from its "unsynced" group, caught up
        every 100 ms: that put ~100 ms on handoffs.) A grant by
        the holder just ahead of us also deletes its entry in the same txn, and the two watches' events may come
        in either order: after a delete, a grant that comes within ``_GRANT_GRACE`` spares the take txn (a
        commit). The wait is short, and ends with one serializable read of our entry from the member that sent the
        delete, as a rule (it has applied that revision, so a grant in that txn shows): a watch from now is not always
        served promptly. etcd's watch server reads the store's revision, then registers the watcher from the next
        one, and a write that lands in between leaves the watcher in the unsynced group (above): about one grant
        mark in a hundred came 7-71 ms after the delete in the contention bench (bench/handoff_breakdown.py), the
        others within 2 ms. Correctness rests on neither: a take after a grant fails and reads the lock key naming
        us (``_won_if_mine``). A deleted lock key (its holder took it free, with no queue entry) brings no grant.
        """
        client = session.client
        inbox: Inbox = queue.SimpleQueue()
        watches = []
        try:
            for key, only in ((ahead, "NOPUT"), (queue_key, "NODELETE")):
                watches.append(client.watch(key, filters=(only,), inbox=inbox))
            if all(0 < watch.created_at <= seen for watch in watches):
                now = None  # the watches hear everything after the state we have: no read
            else:
                now = client.txn([], [op_range(ahead), op_range(queue_key)], deadline=deadline)
        except ResourceExhausted:
            _close(watches)
            raise
        except BackendError as exc:
            _close(watches)
            # The client moved to another member; the take re-reads there. A pause first, so a stream that cannot
            # open at all (say, a proxy that refuses the WebSocket upgrade) costs a take every 0.1 s, not a spin.
            LOG.warning("cannot watch for %r: %s", self.name, exc)
            session.lost.wait(0.1)
            return "broken"
        if now is not None:
            mine = now.kvs(1)
            if not mine:
                _close(watches)
                return "broken"  # our entry went (the session was lost): the caller finds out and starts over
            if mine[0].value.startswith(_GRANTED):
                _close(watches)
                return mine[0]
            if not now.kvs(0):
                _close(watches)
                return "deleted"
        try:
            deleted = False
            until = deadline
            while True:
                batch = next(watches[0].batches(until), None)  # the inbox is shared: either watch's events
                if batch is None:  # ``until`` passed
                    if not deleted:
                        return "timeout"
                    return self._granted_meanwhile(client, queue_key, deadline) or "deleted"
                for event in batch:
                    if event.kv.key == queue_key:
                        if event.kv.value.startswith(_GRANTED):
                            return event.kv
                    elif event.deleted and not deleted:
                        if ahead == self.key:
                            return "deleted"  # a holder without a queue entry grants nothing
                        deleted = True
                        grace = time.monotonic() + _GRANT_GRACE
                        until = grace if deadline is None else min(grace, deadline)
        except ResourceExhausted:
            raise
        except (BackendError, StreamBroken):
            return "broken"
        finally:
            _close(watches)

    def _granted_meanwhile(self, client: EtcdClient, queue_key: bytes, deadline: float | None) -> KeyValue | None:
        """Our entry if it carries a grant mark, read without a commit; None if not (or unread: the take finds out)."""
        try:
            mine, _ = client.range(queue_key, deadline=deadline, serializable=True)
        except BackendError:
            return None
        return mine[0] if mine and mine[0].value.startswith(_GRANTED) else None

    def _take(
        self, session: Session, waiter: str, queue_key: bytes, my_revision: int, deadline: float | None
    ) -> _State | None:
        """The take txn; None when it won, else the fresh state it read instead."""
        result: TxnResult = session.client.txn(
            [
                cmp_create(self.key, 0),
                cmp_create(queue_key, my_revision),
                # every queue key is at least as new as ours: nobody is ahead of us
                cmp_create(self._queue_prefix, my_revision - 1, result="GREATER", end=self._queue_end),
            ],
            # the waiters behind us, read in the same txn: our release can grant without a read (see _grant)
            [op_put(self.key, self._holder_value(waiter), session.lease_id), self._read_oldest()],
            self._state_reads(queue_key, my_revision),
            deadline=deadline,
        )
        if result.succeeded:
            followers = [(kv.key, kv.value) for kv in result.kvs(1) if kv.key != queue_key]
            self._won(session, result.revision, queue_key, followers)
            return None
        return self._state_from(result)

    def _won(
        self,
        session: Session,
        token: int,
        queue_key: bytes | None = None,
        successors: list[tuple[bytes, bytes]] | None = None,
    ) -> bool:
        with self._guard:
            self.token, self.session, self._queue_key = token, session, queue_key
            self._next = successors or []
        return True

    def _won_if_mine(self, session: Session, lock: KeyValue, waiter: str, queue_key: bytes | None) -> bool:
        """A lock key carrying our waiter id is ours: an earlier txn landed though its answer was lost."""
        if Holder.decode(lock.value).waiter != waiter:
            return False
        return self._won(session, lock.mod_revision, queue_key)

    def _abandon(self, delete: Callable[..., None], queue_key: bytes) -> None:
        """Undo a failed attempt: our queue entry, and the lock key if one of our puts landed unanswered."""
        with self._guard:
            if self.token is not None:
                return  # the attempt won after all; the caller holds the lock
        delete((queue_key, []), *[(self.key, [cmp_value(self.key, value)]) for value in self._sent_values])

    def _leave_queue(self, session: Session, queue_key: bytes, value: bytes) -> bool:
        """Remove our queue entry (a wait that ran out), so the waiter behind us moves up at once; True if the
        lock was granted to us meanwhile (the lock key holds our value), which we then hold.

        The wait is over, so this gets one request timeout's worth of sends (the client sends nothing new past
        the deadline given), not every member's; what etcd does not take now, the session's keepalive deletes
        as soon as it answers (or the entry goes with the lease), with the lock key if it was granted to us.
        """
        try:
            result = session.client.txn(
                [cmp_value(self.key, value)],
                [op_range(self.key)],
                [op_delete(queue_key)],
                deadline=time.monotonic() + session.client.options.request_timeout,
            )
        except BackendError:
            session.delete_later((queue_key, []), (self.key, [cmp_value(self.key, value)]))
            return False
        granted = result.kvs(0) if result.succeeded else []
        return bool(granted) and self._won(session, granted[0].mod_revision, queue_key)
