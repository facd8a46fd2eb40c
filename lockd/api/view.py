"""An in-memory copy of the lock state in etcd (held locks, wait queues, members), kept current by one watch.

Why a copy: a lock listing must not cost one etcd round trip per request (let alone per lock). A background
thread reads the three prefixes at one revision, then watches from the next revision on and applies each
change. The watch covers the single range ``[/lockd/, /tooz/locks\\xff)`` rather than one stream per prefix, so
all changes arrive in etcd's revision order on one connection, and a lease expiry (the holder's lock key and
its member record deleted in one revision) is seen as one batch: that is how lease losses are counted.
Status keys also fall in that range and are skipped; of audit keys (force-break records) only the revision
of the latest is kept, so the console re-reads the audit trail only when it changed.

The watch hub's reader thread only notes each batch with the time it arrived (the view's inbox, ``_Inbox``);
the view's thread, woken by the first batch, lets more arrive for ``APPLY_EVERY`` seconds, then applies them
all with those times. At 200 acquisitions/s a batch arrives every few milliseconds, and waking a thread for
each one to apply it cost the sidecar more than the applying itself (bench/serve_cpu.py): now one wake-up
applies a few dozen, while the times the history and the profile record are still the moments the batches
reached the sidecar. A reader applies what has arrived before it reads (``check``), so it is never late; an
idle view sleeps. When the
watch ends, what it delivered is applied before the re-read; a batch the hub delivers after that is dropped
(checked under the view's lock), so none can land on the re-read copy.

The same event path keeps the hold history and the contention profile (lockd.api.history, lockd.api.profile):
a put that makes a lock key name a new holder starts a hold, a delete or a put for another holder ends it,
and how it ended is told from what else changed in that revision (an audit record of it: broken; its holder's
member record: lost; else released). How long a hold waited is known when the view saw its queue entry appear.

The same path keeps the wait-for graph (lockd.api.waits.KeptGraph): each batch draws again the edges of the
locks it touched, so the API and the deadlock check never draw the whole graph.

After a broken stream the thread reads everything again (a full resync) and watches from there: events lost
in between cannot matter to the copy, because the resync replaces all of it. They matter to the history: a hold
the old copy knew that the read no longer finds ended unseen, between the view's last word from its watch and
the read, and is recorded so (``unobserved``, lockd.api.history). While etcd cannot be read, ``check()``
raises BackendError, so the API answers 503 rather than serve a copy it cannot vouch for.
"""

from __future__ import annotations

import heapq
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lockd.api.history import Hold, HoldLog
from lockd.api.profile import Profile, template_of
from lockd.api.waits import DeadlockTracker, Edge, KeptGraph, wait_graph
from lockd.errors import BackendError
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, KeyValue, b64
from lockd.etcd.watch import End, Event, StreamBroken, Watch
from lockd.lock import Holder

LOG = logging.getLogger(__name__)

_LOCKS_END = keys.range_end(keys.TOOZ_LOCK_PREFIX)
_PAGE = 2000  # keys per range request during a resync: bounded answers however many locks are held
_FIRST_SYNC_WAIT = 3.0  # seconds startup waits for the first read of etcd before serving anyway
#: Seconds the view's thread lets batches gather before applying them (see the module doc): how late readers may be.
APPLY_EVERY = 0.05


@dataclass(frozen=True)
class HeldLock:
    name: str
    holder: Holder
    token: int  # the lock key's mod_revision: the revision at which it came to name this holder
    lease: int
    seen_at: float | None  # wall time the watch saw the key put; None when found by a full read
    granted: bool = False  # put over an existing key: handed to this holder by the one before (lockd.lock)
    template: str = ""  # what the profile counts it under (lockd.api.profile.template_of)
    waited: float | None = None  # seconds from its queue entry's appearance in the view to the start; None: unknown

    def as_hold(self, now: float) -> Hold:
        """This hold, still in progress, in the history's shape (``ended`` None, ``how`` "held")."""
        h = self.holder
        return Hold(0, self.name, self.template, h.member, h.host, h.pid, h.thread, self.token, self.started,
                    self.waited, None, "held")  # fmt: skip

    @property
    def started(self) -> float | None:
        """When the hold began as the history counts it: seen by the watch, else the holder's own word."""
        return self.seen_at if self.seen_at is not None else self.acquired_at

    @property
    def acquired_at(self) -> float | None:
        """When this holder got the lock: a lockd holder's value says when it asked, which for a grant is when it
        queued, so a granted lock's time is when the view saw the grant (unknown after a full read)."""
        if self.holder.is_lockd and not (self.granted and self.seen_at is not None):
            return self.holder.acquired_at
        return self.seen_at


@dataclass(frozen=True)
class QueuedWaiter:
    """One lockd waiter's queue entry; queue order is ``revision`` (the entry's create_revision). ``owner``: who
    waits, from the holder value the entry carries (an anonymous Holder for an older lockd's empty entry, and for
    an entry marked granted, which is its holder's own)."""

    waiter: str
    revision: int
    lease: int
    owner: Holder = Holder(None, None, None, None, None)
    seen_at: float | None = None  # wall time the watch saw the entry appear; None when found by a full read


@dataclass(frozen=True)
class MemberRecord:
    member: str
    host: str | None
    pid: int | None
    started_at: float | None
    lease: int


class LockView:
    """The watched copy. Thread-safe; readers never touch etcd."""

    def __init__(
        self,
        client: EtcdClient,
        on_lease_loss: Callable[[str, int], None] = lambda member, locks: None,
        history: HoldLog | None = None,
        profile: Profile | None = None,
    ) -> None:
        self._client = client
        self._on_lease_loss = on_lease_loss
        self.history = history if history is not None else HoldLog()
        self.profile = profile if profile is not None else Profile()
        self._mutex = threading.Lock()
        self._locks: dict[str, HeldLock] = {}
        self._held_by: dict[str, int] = {}  # member -> locks it holds, kept with _locks (the console asks often)
        self._queues: dict[str, dict[bytes, QueuedWaiter]] = {}
        self._members: dict[bytes, MemberRecord] = {}
        self.revision = 0
        self.audit_revision = 0  # mod_revision of the latest audit record seen (0: none since the last read)
        self._error: str | None = "the lock view has not read etcd yet"
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._stream: Watch | None = None
        self._inbox: _Inbox | None = None  # the inbox of the watch followed now (None between watches)
        self._applying = threading.Lock()  # one thread at a time applies arrived batches (order matters)
        self._thread = threading.Thread(target=self._run, name="lockd-api-view", daemon=True)
        #: The wait-for graph, kept as batches apply (lockd.api.waits): the deadlock check, the API, the console.
        self.graph = KeptGraph(self._mutex, lambda: self._queues)
        #: Wall time the view last knew its copy current: its last full read, or the last batch its watch
        #: delivered. A hold that is gone at the next full read ended after it (see _install).
        self._heard_at: float | None = None
        #: (name, token) of the latest force-breaks the watch saw, so a deadlock that a break ended says so.
        self._breaks: deque[tuple[str, int]] = deque(maxlen=1000)
        self._breaks_lock = threading.Lock()  # the detector's thread reads them while the watch's adds
        self.deadlocks = DeadlockTracker(self._edges_to_check, was_broken=self._was_broken, rings=self.graph.cycles)
        self._detector = threading.Thread(
            target=self.deadlocks.run, args=(self._stop,), name="lockd-api-deadlocks", daemon=True
        )

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._detector.start()

    def stop(self) -> None:
        self._stop.set()
        self.restart_stream()
        self._thread.join(timeout=5)
        self._detector.join(timeout=5)

    def restart_stream(self) -> None:
        """Drop the current watch (e.g. a probe found etcd silent): the thread re-reads and watches again."""
        stream = self._stream
        if stream is not None:
            stream.abort()

    # -- reads ----------------------------------------------------------------------------------------------

    def wait_first_read(self, timeout: float = _FIRST_SYNC_WAIT) -> bool:
        """Block until the first read of etcd succeeded or failed (startup only; handlers never block)."""
        return self._synced.wait(timeout)

    def _edges_to_check(self) -> list[Edge]:
        """The graph for the deadlock check: no edges while it can hold no cycle (no owner waits and is waited
        for) and none is open, for then the check can find nothing, and no list of 10,000 edges is made."""
        drawn = self.graph.drawn()
        if not drawn.may_cycle and not self.deadlocks.current():
            return _NO_EDGES
        return drawn.edges

    def _was_broken(self, name: str, token: int) -> bool:
        with self._breaks_lock:
            return (name, token) in self._breaks

    def check(self) -> None:
        """Raises BackendError when the copy cannot be trusted (etcd unreadable, or never read yet). No I/O.

        Every reader (API, console) calls it first, so it also applies what the watch delivered and the view's
        thread has not applied yet (it gathers for ``APPLY_EVERY``): a reader sees every change that reached the
        sidecar before it asked, e.g. a lock taken just before `lockd locks` runs."""
        inbox = self._inbox
        if inbox is not None and inbox.arrived:
            self._apply_arrived(inbox)
        error = self._error
        if error is not None:
            raise BackendError(error)

    @property
    def error(self) -> str | None:
        return self._error

    def locks(self, prefix: str = "", after: str = "", limit: int | None = None) -> tuple[list[HeldLock], bool]:
        """The held locks whose name starts with ``prefix`` and sorts after ``after``, by name: the first
        ``limit`` of them (all without one), and whether more remain. A page costs a scan, not a sort of all."""
        with self._mutex:
            found = [lock for name, lock in self._locks.items() if name.startswith(prefix) and name > after]
        if limit is None or len(found) <= limit:
            found.sort(key=lambda lock: lock.name)
            return found, False
        return heapq.nsmallest(limit, found, key=lambda lock: lock.name), True

    def lock(self, name: str) -> HeldLock | None:
        return self._locks.get(name)

    def held_longest(self, prefix: str, limit: int) -> tuple[int, list[HeldLock]]:
        """(how many locks match ``prefix``, the ``limit`` of them held longest). The token orders acquisitions
        of every name and every kind of holder (a later acquisition has a larger revision)."""
        with self._mutex:
            found = [lock for name, lock in self._locks.items() if name.startswith(prefix)]
        return len(found), heapq.nsmallest(limit, found, key=lambda lock: lock.token)

    def queue(self, name: str) -> list[QueuedWaiter]:
        """The waiters of ``name`` in queue order (first = next to get it), the holder's own entry left out."""
        with self._mutex:
            entries = dict(self._queues.get(name, {}))
            lock = self._locks.get(name)
        if lock is not None and lock.holder.waiter:
            entries.pop(keys.queue_key(name, lock.holder.waiter), None)
        return sorted(entries.values(), key=lambda entry: entry.revision)

    def wait_edges(self) -> list[Edge]:
        """The wait-for graph now (lockd.api.waits), drawn from scratch: one edge per lockd waiter of a held lock.
        Readers use ``graph``, which keeps the same edges without drawing them again."""
        with self._mutex:  # only the names somebody waits for: the view may hold 100,000 locks and no waiter
            queues = {name: dict(entries) for name, entries in self._queues.items()}
            locks = {name: lock for name in queues if (lock := self._locks.get(name)) is not None}
        return wait_graph(locks, queues)

    def member_of_lease(self, lease: int) -> MemberRecord | None:
        """The member whose session lease is ``lease`` (lockd waiters and holders of one process share it)."""
        with self._mutex:
            return next((m for m in self._members.values() if m.lease == lease and lease), None)

    def waiters(self, name: str) -> int:
        with self._mutex:
            return self._waiters(name)

    def waiter_counts(self) -> dict[str, int]:
        """Waiters per lock name, names without any left out: one hold of the mutex for a whole listing."""
        with self._mutex:
            return {name: count for name in self._queues if (count := self._waiters(name))}

    def waiters_by_template(self) -> dict[str, int]:
        """Waiters now per template (the holder's template, else the folded name), for the profile."""
        out: dict[str, int] = {}
        with self._mutex:
            for name in self._queues:
                if count := self._waiters(name):
                    lock = self._locks.get(name)
                    template = lock.template if lock is not None else template_of(name, _NOBODY)
                    out[template] = out.get(template, 0) + count
        return out

    def holding(self, name: str | None = None, template: str | None = None, limit: int = 1000) -> list[HeldLock]:
        """Held locks (of ``name`` / ``template`` when given), the ``limit`` held longest: the holds in progress."""
        with self._mutex:
            if name is not None:
                found = [lock] if (lock := self._locks.get(name)) is not None else []
            else:
                found = [lock for lock in self._locks.values() if template is None or lock.template == template]
        return heapq.nsmallest(limit, found, key=lambda lock: lock.token)

    def queued_since(self, names: list[str]) -> dict[str, list[float | None]]:
        """For each of ``names``: when each of its waiters (the holder's own entry left out) was seen to queue."""
        out = {}
        with self._mutex:
            for name in names:
                lock = self._locks.get(name)
                own = lock.holder.waiter if lock is not None else None
                entries = self._queues.get(name, {})
                out[name] = [entry.seen_at for entry in entries.values() if entry.waiter != own]
        return out

    def _waiters(self, name: str) -> int:
        """Queue entries of ``name`` but the holder's own (kept while held by a holder that came by the queue)."""
        queue = self._queues.get(name)
        if not queue:
            return 0
        lock = self._locks.get(name)
        own = keys.queue_key(name, lock.holder.waiter) if lock is not None and lock.holder.waiter else None
        return len(queue) - (own in queue)

    def members(self) -> list[MemberRecord]:
        with self._mutex:
            found = list(self._members.values())
        found.sort(key=lambda m: m.member)
        return found

    def locks_by_member(self) -> dict[str, int]:
        with self._mutex:
            return dict(self._held_by)

    def _count(self, lock: HeldLock, step: int) -> None:
        member = lock.holder.member
        if member is not None:
            left = self._held_by.get(member, 0) + step
            if left > 0:
                self._held_by[member] = left
            else:
                self._held_by.pop(member, None)

    def totals(self) -> tuple[int, int, int]:
        """(locks held, waiters queued, members) for the metrics."""
        with self._mutex:
            return len(self._locks), sum(self._waiters(name) for name in self._queues), len(self._members)

    # -- the watch thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                revision = self._resync()
                backoff = 0.1
                self._follow(revision)
            except BackendError as exc:
                self._fail(str(exc))
            except StreamBroken as exc:
                if self._stop.is_set():
                    return
                LOG.info("lock view watch ended (%s); re-reading etcd", exc)
                continue  # re-read at once; a failing read sets the error and backs off
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _fail(self, reason: str) -> None:
        if self._error is None or self._synced.is_set():
            LOG.warning("lock view cannot read etcd: %s", reason)
        self._error = f"etcd unavailable: {reason}"
        self._synced.set()

    def _resync(self) -> int:
        """Replace the whole copy by one consistent read; returns the revision it was read at."""
        asked = time.time()
        locks_kvs, revision = self._range_all(keys.TOOZ_LOCK_PREFIX, _LOCKS_END, 0)
        answered = time.time()
        queue_kvs, _ = self._range_all(keys.QUEUE_PREFIX, keys.range_end(keys.QUEUE_PREFIX), revision)
        member_kvs, _ = self._range_all(keys.MEMBER_PREFIX, keys.range_end(keys.MEMBER_PREFIX), revision)
        self._install(locks_kvs, queue_kvs, member_kvs, revision, asked, answered)
        return revision

    def _install(
        self,
        locks_kvs: list[KeyValue],
        queue_kvs: list[KeyValue],
        member_kvs: list[KeyValue],
        revision: int,
        asked: float,
        answered: float,
    ) -> None:
        """Make the copy what a full read at ``revision`` found; the read was sent at ``asked`` and its locks
        came back at ``answered`` (wall times).

        A hold the old copy knew and the read did not find (the key gone, or naming another holder) ended while
        the view was not watching: between the moment the view last knew its copy current (``_heard_at``) and
        the read. It goes to the history as ``unobserved``, with both bounds; how it ended is not known."""
        old_locks, old_queues = self._locks, self._queues
        locks = {}
        went_on: set[str] = set()  # names whose hold in the old copy is still held
        for kv in locks_kvs:
            lock = _held_lock(kv, None)
            before = old_locks.get(lock.name)
            if before is not None and before.token == lock.token:
                lock = before  # still held
                went_on.add(lock.name)
            elif before is not None and lock.holder.is_lockd and lock.holder.waiter == before.holder.waiter:
                # the same holder wrote its key again (as _apply counts it): one hold goes on, with the new token
                lock = HeldLock(
                    lock.name, lock.holder, lock.token, lock.lease, before.seen_at, before.granted, before.template,
                    before.waited,
                )  # fmt: skip
                went_on.add(lock.name)
            locks[lock.name] = lock
        queues: dict[str, dict[bytes, QueuedWaiter]] = {}
        for kv in queue_kvs:
            name = keys.queue_name(kv.key)
            before_entry = old_queues.get(name, {}).get(kv.key)
            seen = (
                before_entry.seen_at
                if before_entry is not None and before_entry.revision == kv.create_revision
                else None
            )
            queues.setdefault(name, {})[kv.key] = _queued(kv, seen)
        members = {kv.key: m for kv in member_kvs if (m := _member(kv)) is not None}
        heard = self._heard_at
        with self._mutex:
            self._locks, self._queues, self._members = locks, queues, members
            self._held_by = {}
            for lock in locks.values():
                self._count(lock, 1)
            self.revision = self.audit_revision = revision  # breaks may have happened while we did not watch
            self.graph.reset(locks, queues)
            self._heard_at = asked
        unseen = [lock for name, lock in old_locks.items() if name not in went_on] if heard is not None else []
        for lock in unseen:
            h = lock.holder
            owner = (h.member, h.host, h.pid, h.thread)
            self.history.append(
                lock.name, lock.template, owner, lock.token, lock.started, lock.waited, answered, "unobserved",
                ended_after=min(heard or answered, answered),
            )  # fmt: skip
        if unseen:
            LOG.info("%d hold(s) ended while the lock view was not watching; recorded as unobserved", len(unseen))
        if self._error is not None:
            LOG.info(
                "lock view read etcd at revision %d: %d locks held, %d members", revision, len(locks), len(members)
            )
        self._error = None
        self._synced.set()
        self.deadlocks.changed()

    def _range_all(self, key: bytes, end: bytes, revision: int, keys_only: bool = False) -> tuple[list[KeyValue], int]:
        """Every key in [key, end) at ``revision`` (0: now), read in pages."""
        found: list[KeyValue] = []
        start = key
        while True:
            body: dict[str, Any] = {"key": b64(start), "range_end": b64(end), "limit": str(_PAGE)}
            if revision:
                body["revision"] = str(revision)
            if keys_only:
                body["keys_only"] = True
            answer = self._client.call("kv/range", body)
            revision = revision or int(answer.get("header", {}).get("revision", 0))
            page = [KeyValue.from_json(kv) for kv in answer.get("kvs", [])]
            found.extend(page)
            if not answer.get("more") or not page:
                return found, revision
            start = page[-1].key + b"\x00"

    def _follow(self, revision: int) -> None:
        inbox = _Inbox()
        with self._mutex:
            self._inbox = inbox
        try:
            # From the revision of the read, not from now: the view must not miss a change between the two.
            stream = self._client.watch(keys.LOCKD_PREFIX, _LOCKS_END, start_revision=revision + 1, inbox=inbox)
            self._stream = stream
            try:
                if self._stop.is_set():
                    return
                for _ in stream.batches():  # one empty batch per wake-up (_Inbox); the end raises StreamBroken
                    self._stop.wait(APPLY_EVERY)  # let what follows arrive too, then apply it all at once
                    self._apply_arrived(inbox)
            finally:
                self._stream = None
                stream.close()
        finally:
            self._apply_arrived(inbox)  # what the watch delivered before it ended, then no more of it
            with self._mutex:
                self._inbox = None

    def _apply_arrived(self, inbox: _Inbox) -> None:
        """Apply the batches that arrived, in their order (the view's thread, or a reader catching up)."""
        with self._applying:
            inbox.signalled = False  # before taking: a batch that arrives from now on wakes the view's thread again
            while inbox.arrived:
                arrived_at, batch = inbox.arrived.popleft()
                self._apply(batch, inbox, arrived_at)

    def _apply(self, batch: list[Event], inbox: _Inbox | None = None, now: float | None = None) -> None:
        """Apply one batch that arrived at ``now`` (wall time; None: now). ``inbox``: its watch's, dropped if that
        watch is no longer the one the view follows."""
        now = time.time() if now is None else now
        ended_members: dict[int, set[str]] = {}  # revision -> members whose record went
        dropped: dict[int, dict[str, int]] = {}  # revision -> member -> locks deleted with it
        started: list[HeldLock] = []
        ended: list[tuple[HeldLock, int]] = []  # (the hold, the revision that ended it)
        broken: set[tuple[str, int]] = set()  # (name, token) of every audit record put in this batch
        touched: set[str] = set()  # locks whose key or queue changed: their edges of the wait-for graph are redrawn
        with self._mutex:
            if inbox is not self._inbox:
                return
            if self._heard_at is None or now > self._heard_at:
                self._heard_at = now
            for event in batch:
                kv = event.kv
                if kv.key.startswith(keys.TOOZ_LOCK_PREFIX):
                    name = keys.lock_name(kv.key)
                    touched.add(name)
                    if event.deleted:
                        old = self._locks.pop(name, None)
                        if old is not None:
                            self._count(old, -1)
                            ended.append((old, kv.mod_revision))
                        if old is not None and old.holder.member is not None:
                            per_member = dropped.setdefault(kv.mod_revision, {})
                            per_member[old.holder.member] = per_member.get(old.holder.member, 0) + 1
                    else:
                        replaced = self._locks.get(name)
                        if replaced is not None:
                            self._count(replaced, -1)
                        holder = Holder.decode(kv.value)
                        if replaced is not None and holder.is_lockd and holder.waiter == replaced.holder.waiter:
                            # the same holder wrote its key again: one hold goes on (with the new token)
                            lock = HeldLock(
                                name, holder, kv.mod_revision, kv.lease, replaced.seen_at, replaced.granted,
                                replaced.template, replaced.waited,
                            )  # fmt: skip
                        else:
                            if replaced is not None:
                                ended.append((replaced, kv.mod_revision))  # a grant: handed on by its holder
                            lock = _held_lock(kv, now, holder, self._waited(name, holder, now))
                            started.append(lock)
                        self._locks[name] = lock
                        self._count(lock, 1)
                elif kv.key.startswith(keys.QUEUE_PREFIX):
                    name = keys.queue_name(kv.key)
                    touched.add(name)
                    if event.deleted:
                        queue = self._queues.get(name)
                        if queue is not None:
                            queue.pop(kv.key, None)
                            if not queue:
                                del self._queues[name]
                                # its edges go now: queued for again in this batch, it comes last, as in _queues
                                self.graph.redraw((name,), self._locks, self._queues)
                    else:
                        entries = self._queues.setdefault(name, {})
                        before = entries.get(kv.key)  # a grant re-puts the next waiter's entry: it queued earlier
                        entries[kv.key] = _queued(kv, before.seen_at if before is not None else now)
                elif kv.key.startswith(keys.MEMBER_PREFIX):
                    if event.deleted:
                        old_member = self._members.pop(kv.key, None)
                        if old_member is not None:
                            ended_members.setdefault(kv.mod_revision, set()).add(old_member.member)
                    elif (record := _member(kv)) is not None:
                        self._members[kv.key] = record
                elif kv.key.startswith(keys.AUDIT_PREFIX):
                    self.audit_revision = kv.mod_revision
                    if not event.deleted and (entry := keys.audit_entry(kv.key)) is not None:
                        broken.add(entry)
                if kv.mod_revision > self.revision:
                    self.revision = kv.mod_revision
            if touched:
                self.graph.redraw(touched, self._locks, self._queues)
        if broken:
            with self._breaks_lock:
                self._breaks.extend(broken)
        self.deadlocks.changed()
        self._record(started, ended, broken, ended_members, now)
        # A member record and that member's locks deleted in the same revision: its lease ended with locks held.
        for revision, members in ended_members.items():
            for member, count in dropped.get(revision, {}).items():
                if member in members:
                    LOG.warning("member %s's lease ended while it held %d lock(s)", member, count)
                    self._on_lease_loss(member, count)

    def _waited(self, name: str, holder: Holder, now: float) -> float | None:
        """How long a new holder waited: since the view saw its queue entry appear. A lockd holder with no entry
        took a free lock with an empty queue in one txn (lockd.lock), so it waited for nothing. None: the entry
        was there before the view's last full read, or the holder is stock tooz (it polls and queues nowhere)."""
        if not holder.waiter:
            return None
        queue = self._queues.get(name)  # most takes find no queue: no key to build then
        entry = queue.get(keys.queue_key(name, holder.waiter)) if queue else None
        if entry is None:
            return 0.0
        return max(0.0, now - entry.seen_at) if entry.seen_at is not None else None

    def _record(
        self,
        started: list[HeldLock],
        ended: list[tuple[HeldLock, int]],
        broken: set[tuple[str, int]],
        ended_members: dict[int, set[str]],
        now: float,
    ) -> None:
        """Holds that ended go to the history and the profile, with how they ended (lockd.api.history); those
        that started count as acquisitions."""
        for lock, revision in ended:
            h = lock.holder
            if (lock.name, lock.token) in broken:
                how = "broken"
            elif h.member is not None and h.member in ended_members.get(revision, ()):
                how = "lost"
            else:
                how = "released"
            start = lock.started
            owner = (h.member, h.host, h.pid, h.thread)
            self.history.append(lock.name, lock.template, owner, lock.token, start, lock.waited, now, how)
            if lock.seen_at is not None:  # a hold found by a full read began at an unknown time
                self.profile.released(lock.template, max(0.0, now - lock.seen_at))
        for lock in started:
            self.profile.acquired(lock.template, lock.waited)


class _Inbox:
    """The view's watch inbox: the hub's reader appends each batch with the time it arrived, and wakes the view's
    thread (an empty batch) only for the first batch since that thread last took them, so an idle view sleeps
    and a busy one wakes once per ``APPLY_EVERY`` (see the module doc). The watch's end comes the same way."""

    def __init__(self) -> None:
        self.arrived: deque[tuple[float, list[Event]]] = deque()  # appended by one thread, popped by another
        self.signalled = False  # a wake-up is queued that the view's thread has not acted on yet
        self._wakeups: queue.SimpleQueue[list[Event] | End] = queue.SimpleQueue()

    def put(self, item: list[Event] | End) -> None:
        if isinstance(item, End):
            self._wakeups.put(item)
            return
        self.arrived.append((time.time(), item))
        if not self.signalled:
            self.signalled = True
            self._wakeups.put([])

    def get(self, *, timeout: float | None = None) -> list[Event] | End:
        return self._wakeups.get(timeout=timeout)


_NOBODY = Holder(None, None, None, None, None)
_NO_EDGES: list[Edge] = []  # never changed: one list, so the deadlock check sees it as the same graph each time


def _held_lock(
    kv: KeyValue, seen_at: float | None, holder: Holder | None = None, waited: float | None = None
) -> HeldLock:
    name = keys.lock_name(kv.key)
    holder = holder if holder is not None else Holder.decode(kv.value)
    return HeldLock(name, holder, kv.mod_revision, kv.lease, seen_at, kv.version > 1, template_of(name, holder), waited)


def _queued(kv: KeyValue, seen_at: float | None = None) -> QueuedWaiter:
    waiter = kv.key.rsplit(b"/", 1)[-1].decode("ascii", "replace")
    return QueuedWaiter(waiter, kv.create_revision, kv.lease, Holder.decode(kv.value), seen_at)


def _member(kv: KeyValue) -> MemberRecord | None:
    try:
        data = json.loads(kv.value)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    started = data.get("started_at")
    return MemberRecord(
        member=str(data.get("member") or keys.unquote(kv.key[len(keys.MEMBER_PREFIX) :])),
        host=data.get("host") if isinstance(data.get("host"), str) else None,
        pid=pid if isinstance(pid, int) else None,
        started_at=float(started) if isinstance(started, (int, float)) else None,
        lease=kv.lease,
    )
