"""Who waits for whom, across hosts: the wait-for graph of lockd's locks, and the deadlocks in it.

Theory of operation
-------------------
An *owner* is one thread (under eventlet, one green thread) of one process: ``(member, host, pid, thread)``,
as every lockd holder value and queue entry names it (lockd.lock.Holder). A thread waits for one lock at a
time, while its process may hold many: owners at the grain of a process would see a cycle between two threads
of one process that wait for nothing of each other.

The graph is built from the lock view's copy of etcd (lockd.api.view): for every lockd queue entry that is not
its lock's holder's own, an edge from the waiting owner to the owner holding that lock (the lock key's holder
value; a stock tooz holder is an anonymous owner, which waits for nothing lockd can see). These are the hard
edges of PostgreSQL's lock manager; waiting *behind* another waiter (a soft edge) adds no cycle here, because
queues are FIFO and each owner waits for one lock: a cycle through a soft edge implies one through hard edges.

A cycle is a deadlock: nobody in it can move until one of its locks is freed. Each owner has at most one
outgoing edge, so following edges from every owner finds every cycle in linear time. A deadlock's id is a hash
of its (owner, lock) pairs, so the same cycle keeps its id for as long as it lasts, and is logged once. The
lock suggested for breaking is the youngest hold in the cycle (the highest token), as databases pick the
youngest transaction as their victim: it has done the least work under its locks. By default lockd never breaks
it by itself; ``lockd break`` does, audited. With ``[lockd] deadlock_break_after = S`` the sidecar breaks the
suggested hold of a deadlock that lasted S seconds, audited like an operator's break and only at the token the
report named (a hold that changed hands meanwhile is left alone): the waiter whose lock was broken goes on, the
holder's ``is_still_owner()`` turns False and its release says False. Several sidecars may do it at once; the
token makes the second break a no-op.

The tracker runs the detection on a timer (``DeadlockTracker.INTERVAL``), after the view changed or while a
deadlock awaits its automatic break: cheap when nothing waits, and a cycle is reported within one interval (plus
the watch's delay) of closing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from lockd.lock import Holder

LOG = logging.getLogger(__name__)


class Owner(NamedTuple):
    """One waiting or holding thread; all fields None for a stock tooz holder (unknown).

    A named tuple rather than a frozen dataclass (as Edge): the graph makes two per waiter and hashes and
    compares them, and a tuple's construction, hash and equality are native, three times cheaper with
    10,000 waiters (bench/waits_scale.py)."""

    member: str | None
    host: str | None
    pid: int | None
    thread: int | None

    @classmethod
    def of(cls, holder: Holder) -> Owner:
        return cls(holder.member, holder.host, holder.pid, holder.thread)

    @property
    def known(self) -> bool:
        return self.member is not None

    def label(self) -> str:
        if not self.known:
            return "a stock tooz holder"
        return f"{self.member} (host {self.host}, pid {self.pid}, thread {self.thread})"


class Edge(NamedTuple):
    """``waiter`` waits for ``lock``, which ``holder`` holds (since ``since``, the waiter's enqueue time)."""

    waiter: Owner
    holder: Owner
    lock: str
    since: float | None
    token: int  # the holder's fencing token for ``lock``


@dataclass(frozen=True)
class Deadlock:
    id: str
    since: float
    edges: tuple[Edge, ...]  # in cycle order: each edge's holder is the next edge's waiter

    @property
    def locks(self) -> list[str]:
        return [edge.lock for edge in self.edges]

    @property
    def owners(self) -> list[Owner]:
        return [edge.waiter for edge in self.edges]

    @property
    def victim(self) -> Edge:
        """The youngest hold in the cycle: the edge whose lock's token is highest."""
        return max(self.edges, key=lambda edge: edge.token)

    @property
    def suggested_break(self) -> str:
        return self.victim.lock


@dataclass(frozen=True)
class Resolved:
    id: str
    since: float
    ended: float
    locks: tuple[str, ...]
    how: str


class HeldLike(Protocol):
    """What the graph needs of a held lock (lockd.api.view.HeldLock has it)."""

    @property
    def holder(self) -> Holder: ...

    @property
    def token(self) -> int: ...


class QueuedLike(Protocol):
    """What the graph needs of a queue entry (lockd.api.view.QueuedWaiter has it)."""

    @property
    def waiter(self) -> str: ...

    @property
    def owner(self) -> Holder: ...


def wait_graph(locks: Mapping[str, HeldLike], queues: Mapping[str, Mapping[bytes, QueuedLike]]) -> list[Edge]:
    """Every hard edge: a lockd waiter of a held lock -> that lock's holder."""
    edges = []
    for name, entries in queues.items():
        lock = locks.get(name)
        if lock is None:
            continue  # free for a moment (a handoff under way): nobody waits for anyone
        holder = Owner.of(lock.holder)
        for entry in entries.values():
            if entry.waiter == lock.holder.waiter or not entry.owner.is_lockd:
                continue  # the holder's own entry, or one whose owner is not named (an older lockd, a grant mark)
            waiter = Owner.of(entry.owner)
            if waiter != holder:
                edges.append(Edge(waiter, holder, name, entry.owner.acquired_at, lock.token))
    return edges


class GraphSource(Protocol):
    """What KeptGraph needs of the lock view: its revision, and the graph drawn from its state now."""

    @property
    def revision(self) -> int: ...

    def wait_edges(self) -> list[Edge]: ...


@dataclass
class Drawn:
    """The graph at one revision of the view, and (once asked for) the API's JSON of it (lockd.api.readmodel)."""

    revision: int
    edges: list[Edge]
    body: bytes | None = None


class KeptGraph:
    """The wait-for graph drawn once per revision of the view, for every reader: the deadlock check, the API and
    the console. With 10,000 waiters a drawing costs tens of milliseconds (bench/waits_scale.py).

    The graph is a function of the view's state, which changes only with its revision. The revision is read
    before and after drawing; a graph drawn while the view moved is used once and not kept. A graph equal to
    the one kept (compared as tuples: ~1 ms for 10,000 edges) is replaced by it, answer included: most
    revisions move no edge (a free lock taken or released, a status written).
    """

    def __init__(self, source: GraphSource) -> None:
        self._source = source
        self._kept: Drawn | None = None

    def drawn(self) -> Drawn:
        revision = self._source.revision
        kept = self._kept
        if kept is not None and kept.revision == revision:
            return kept
        edges = self._source.wait_edges()
        found = Drawn(revision, kept.edges, kept.body) if kept is not None and edges == kept.edges else None
        found = found or Drawn(revision, edges)
        if self._source.revision == revision:
            self._kept = found  # one reference swap: readers see the old one or the new one
        return found

    def edges(self) -> list[Edge]:
        return self.drawn().edges


def cycles(edges: Iterable[Edge]) -> list[tuple[Edge, ...]]:
    """The cycles among ``edges``, each once, each starting from its smallest (waiter, lock)."""
    out: dict[Owner, list[Edge]] = {}
    for edge in edges:
        out.setdefault(edge.waiter, []).append(edge)
    found: dict[tuple[tuple[Owner, str], ...], tuple[Edge, ...]] = {}
    done: set[Owner] = set()
    for start in sorted(out):
        path: list[Edge] = []
        index: dict[Owner, int] = {}
        node = start
        while node in out and node not in done and node not in index:
            index[node] = len(path)
            edge = min(out[node], key=lambda e: (e.lock, e.holder))  # one lock waited for at a time
            path.append(edge)
            node = edge.holder
        if node in index:  # back to an owner on this path: a cycle from there
            ring = path[index[node] :]
            first = min(range(len(ring)), key=lambda i: (ring[i].waiter, ring[i].lock))
            ring = ring[first:] + ring[:first]
            found[tuple((edge.waiter, edge.lock) for edge in ring)] = tuple(ring)
        done.update(index)
    return list(found.values())


def cycle_id(ring: tuple[Edge, ...]) -> str:
    text = "|".join(f"{e.waiter.member}/{e.waiter.host}/{e.waiter.pid}/{e.waiter.thread}>{e.lock}" for e in ring)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class DeadlockTracker:
    """The deadlocks now and the last ``keep`` that ended, from snapshots of the wait-for graph."""

    snapshot: Callable[[], list[Edge]]
    keep: int = 50
    #: Break a deadlock's suggested hold once it lasted this long (None: never; the operator does): see the module.
    break_after: float | None = None
    breaker: Callable[[Deadlock], None] | None = None
    #: Whether the hold (lock name, token) was force-broken (the view's audit records): how a deadlock ended.
    was_broken: Callable[[str, int], bool] = lambda name, token: False
    INTERVAL = 0.5
    _current: dict[str, Deadlock] = field(default_factory=dict)
    _resolved: deque[Resolved] = field(default_factory=deque)
    _dirty: bool = False  # a flag, not an Event: the loop polls it, and the view sets it for every watch batch
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _break_tried: set[str] = field(default_factory=set)
    _last: list[Edge] | None = None

    def changed(self) -> None:
        """The view changed: look again at the next tick."""
        self._dirty = True

    def run(self, stop: threading.Event) -> None:
        """The detection loop (a thread of the view): every INTERVAL, if the view changed since the last look."""
        while not stop.wait(self.INTERVAL):
            if self._dirty or self._breaks_due():
                self._dirty = False
                try:
                    edges = self.snapshot()
                    if edges is not self._last:  # the same graph (KeptGraph): the same cycles
                        self.update(edges, time.time())
                        self._last = edges
                    self._break_due(time.time())
                except Exception:  # a bug here must not stop the loop; the next change tries again
                    LOG.exception("deadlock detection failed")

    def _breaks_due(self) -> bool:
        with self._mutex:
            return self.break_after is not None and any(key not in self._break_tried for key in self._current)

    def _break_due(self, now: float) -> None:
        """Break the suggested hold of each deadlock older than ``break_after``, once per deadlock."""
        if self.break_after is None or self.breaker is None:
            return
        with self._mutex:
            due = [
                d for d in self._current.values() if d.id not in self._break_tried and now - d.since >= self.break_after
            ]
            self._break_tried.update(d.id for d in due)
            self._break_tried.intersection_update(self._current)
        for deadlock in due:
            try:
                self.breaker(deadlock)
            except Exception:  # etcd failed: the operator still has the report and `lockd break`
                LOG.exception("automatic break of deadlock %s failed", deadlock.id)

    def update(self, edges: list[Edge], now: float) -> None:
        rings = {cycle_id(ring): ring for ring in cycles(edges)}
        with self._mutex:
            for key, ring in rings.items():
                if key not in self._current:
                    found = self._current[key] = Deadlock(key, now, ring)
                    LOG.warning(
                        "deadlock %s: %s; break %r to end it (lockd break %s)",
                        key,
                        "; ".join(f"{e.waiter.label()} waits for {e.lock!r}, held by {e.holder.label()}" for e in ring),
                        found.suggested_break,
                        found.suggested_break,
                    )
            for key in [key for key in self._current if key not in rings]:
                gone = self._current.pop(key)
                how = _how_it_ended(gone, edges, self.was_broken)
                self._resolved.appendleft(Resolved(key, gone.since, now, tuple(gone.locks), how))
                while len(self._resolved) > self.keep:
                    self._resolved.pop()
                LOG.warning("deadlock %s ended after %.1fs: %s", key, now - gone.since, how)

    def current(self) -> list[Deadlock]:
        with self._mutex:
            return sorted(self._current.values(), key=lambda d: d.since)

    def resolved(self) -> list[Resolved]:
        with self._mutex:
            return list(self._resolved)


def _how_it_ended(gone: Deadlock, edges: list[Edge], was_broken: Callable[[str, int], bool]) -> str:
    """What changed in the cycle: a hold broken (by an operator or deadlock_break_after), a lock that changed
    hands (released, lost) or a waiter that left."""
    for edge in gone.edges:
        if was_broken(edge.lock, edge.token):
            return f"{edge.lock!r} (token {edge.token}) was broken"
    now = {(e.waiter, e.lock): e for e in edges}
    for edge in gone.edges:
        after = now.get((edge.waiter, edge.lock))
        if after is None:
            return f"{edge.waiter.label()} stopped waiting for {edge.lock!r} (it got the lock, gave up or was lost)"
        if after.token != edge.token:
            return f"{edge.lock!r} changed hands (released, broken or lost)"
    return "the cycle opened"
