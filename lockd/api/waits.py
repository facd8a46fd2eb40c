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
The view keeps the graph as it applies its watch's events (``KeptGraph``): each batch draws again only the
edges of the locks it touched, so a reader pays for what changed, not for the whole graph, however many wait.

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

The tracker runs the detection on a timer (``DeadlockTracker.INTERVAL``), after the graph changed or while a
deadlock awaits its automatic break: cheap when nothing waits, and a cycle is reported within one interval (plus
the watch's delay) of closing. Only owners that wait and are waited for are walked unless one of them is on a
cycle (``cycles``), so thousands of waiters on holders that wait for nothing cost a pass over the edges.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple, Protocol

import pydantic_core

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
        """The owner a holder value names. Its fields come from JSON unchecked (lockd.lock.Holder.decode): a value
        lockd did not write may carry a number for a name or text for a pid, which is kept as text or dropped,
        so that owners always sort (the answer lists them in order; KeptGraph keeps them sorted)."""
        member, host, pid, thread = holder.member, holder.host, holder.pid, holder.thread
        if member is not None and type(member) is not str:
            member = str(member)
        if host is not None and type(host) is not str:
            host = str(host)
        if pid is not None and type(pid) is not int:
            pid = None
        if thread is not None and type(thread) is not int:
            thread = None
        return cls(member, host, pid, thread)

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


def lane_edges(name: str, lock: HeldLike | None, entries: Mapping[bytes, QueuedLike] | None) -> tuple[Edge, ...]:
    """The edges of one lock: each lockd waiter of ``name`` -> its holder, in its queue's order (none while free)."""
    if lock is None or not entries:
        return ()  # free for a moment (a handoff under way): nobody waits for anyone
    holder = Owner.of(lock.holder)
    own = lock.holder.waiter
    edges = []
    for entry in entries.values():
        if entry.waiter == own or not entry.owner.is_lockd:
            continue  # the holder's own entry, or one whose owner is not named (an older lockd, a grant mark)
        waiter = Owner.of(entry.owner)
        if waiter != holder:
            edges.append(Edge(waiter, holder, name, entry.owner.acquired_at, lock.token))
    return tuple(edges)


def wait_graph(locks: Mapping[str, HeldLike], queues: Mapping[str, Mapping[bytes, QueuedLike]]) -> list[Edge]:
    """Every hard edge, drawn from scratch: a lockd waiter of a held lock -> that lock's holder, lock by lock in
    ``queues``' order. KeptGraph keeps the same list current without drawing it again."""
    edges: list[Edge] = []
    for name, entries in queues.items():
        edges.extend(lane_edges(name, locks.get(name), entries))
    return edges


#: Where an owner sorts in ``GET /v1/waits``: see ``_owner_key``.
OwnerKey = tuple[str, str, int, int, bool, bool, bool, bool]


def _owner_key(owner: Owner) -> OwnerKey:
    """By member, host, pid and thread, a None counted as "" or 0 (the order lockd.api.readmodel's answer uses),
    then by which of them are None, so that no two owners tie: the sorted list is searched by key."""
    member, host, pid, thread = owner
    return (member or "", host or "", pid or 0, thread or 0, member is None, host is None, pid is None, thread is None)


def _owner_row(owner: Owner) -> dict[str, Any]:
    return {"member": owner.member, "host": owner.host, "pid": owner.pid, "thread": owner.thread}


def _edge_row(edge: Edge) -> dict[str, Any]:
    waiter, holder = _owner_row(edge.waiter), _owner_row(edge.holder)
    return {"waiter": waiter, "holder": holder, "lock": edge.lock, "since": edge.since}


class Lane:
    """One lock's edges (its waiters -> its holder) in queue order, and their JSON once asked for. The edges never
    change: a lock whose edges change gets a new Lane, so the JSON a Lane keeps is always that of its edges."""

    __slots__ = ("edges", "_rows")

    def __init__(self, edges: tuple[Edge, ...]) -> None:
        self.edges = edges
        self._rows: bytes | None = None

    def rows(self) -> bytes:
        """The edges as WaitsOut's edge objects, comma-separated (two readers at once may both make it: same bytes)."""
        rows = self._rows
        if rows is None:
            rows = self._rows = pydantic_core.to_json([_edge_row(edge) for edge in self.edges])[1:-1]
        return rows


#: One owner in the answer's order: where it sorts, who it is, and its JSON (WaitsOut's owner object).
OwnerEntry = tuple[OwnerKey, Owner, bytes]


class LaneBlock:
    """Consecutive lanes of the answer, with their JSON joined once asked for. Never changed: a lane replaced
    makes a new block, so the JSON a block keeps is always that of its lanes."""

    __slots__ = ("lanes", "_rows")

    def __init__(self, lanes: tuple[Lane, ...]) -> None:
        self.lanes = lanes
        self._rows: bytes | None = None

    def rows(self) -> bytes:
        rows = self._rows
        if rows is None:
            rows = self._rows = b",".join([lane._rows or lane.rows() for lane in self.lanes])
        return rows


class OwnerBlock:
    """Consecutive owners of the answer (sorted entries), with their JSON joined once asked for. Never changed."""

    __slots__ = ("entries", "_rows")

    def __init__(self, entries: tuple[OwnerEntry, ...]) -> None:
        self.entries = entries
        self._rows: bytes | None = None

    def rows(self) -> bytes:
        rows = self._rows
        if rows is None:
            rows = self._rows = b",".join([entry[2] for entry in self.entries])
        return rows


class Drawn:
    """The graph at one version of a KeptGraph, for every reader: the deadlock check, the API and the console.

    Its lanes (one per lock with edges, in the view's queue order) and owners (in the answer's order), both in
    blocks, are taken under the view's mutex; the edge list and the API's JSON are made from them on first use,
    then kept."""

    def __init__(self, version: int, lanes: list[LaneBlock], owners: list[OwnerBlock], may_cycle: bool) -> None:
        self.version = version
        self.lane_blocks = lanes
        self.owner_blocks = owners
        #: Some owner waits and is waited for: only then can there be a cycle (see ``cycles``).
        self.may_cycle = may_cycle
        self._edges: list[Edge] | None = None
        self._body: bytes | None = None

    @property
    def edges(self) -> list[Edge]:
        """Every edge, lock by lock: the list ``wait_graph`` draws from the same state (one list per Drawn, so a
        reader can tell an unchanged graph by identity, as DeadlockTracker.run does)."""
        edges = self._edges
        if edges is None:
            lanes = chain.from_iterable(block.lanes for block in self.lane_blocks)
            edges = self._edges = list(chain.from_iterable(lane.edges for lane in lanes))
        return edges

    @property
    def owners(self) -> list[Owner]:
        """Every owner of an edge, in the answer's order."""
        return [entry[1] for block in self.owner_blocks for entry in block.entries]

    @property
    def body(self) -> bytes:
        """``GET /v1/waits``'s answer (WaitsOut's shape): every owner once, then every edge. The same bytes as
        ``pydantic_core.to_json(readmodel.wait_rows(self.edges))``, made of the JSON each lane, each owner and
        each block of them keeps: after a change only what changed is serialised and joined again."""
        body = self._body
        if body is None:
            # one join of it all: each join makes its bytes afresh, and megabytes of new memory cost page faults
            parts = [b'{"owners":[']
            for blocks, end in ((self.owner_blocks, b'],"edges":['), (self.lane_blocks, b"]}")):
                for block in blocks:
                    parts += (block.rows(), b",")
                if blocks:
                    parts.pop()
                parts.append(end)
            body = self._body = b"".join(parts)
        return body


class KeptGraph:
    """The wait-for graph, kept current by the lock view's event path rather than drawn again for each reader.

    With 10,000 waiters a drawing from scratch costs tens of milliseconds and its JSON a hundred more
    (bench/waits_scale.py), and waiters that move would make every reader pay it. So the view tells the graph
    which locks each batch of watch events touched (their key or their queue), under the view's mutex, and
    only those locks' edges are drawn again (``lane_edges``: as many as that lock has waiters); the graph's
    version moves only when some lock's edges differ (most batches move none: a free lock taken or released).

    A reader asks for the graph (``drawn``): at the same version it gets the Drawn it had, JSON included; after a
    change, a new Drawn of the lanes, in the view's queue order (the order ``wait_graph`` gives), and of the
    owners. The graph counts the edges each owner waits on and is waited for through, so it knows its owners,
    kept sorted as they come and go with their JSON made once, and whether any owner both waits and is waited
    for (without one there is no cycle, and the deadlock check has nothing to walk).

    Lanes and owners are kept in blocks of ``block`` (a LaneBlock, an OwnerBlock), each with its JSON joined
    once: a lane replaced, or an owner that came or went, makes one new block, and a reader joins a few dozen
    blocks, serialising only the new lanes and joining only the new blocks. The lane blocks follow the view's
    queue order, found again by a pass over the queues only when a lock's lane came or went; a queue that
    empties takes its lane with it at once (``redraw`` of that name), so a lock queued for again comes last,
    as it does in the view's queues.

    Cost, with 10,000 waiters (bench/waits_scale.py): per batch, a lookup per lock touched and, for a lock with
    waiters, its edges drawn again (one per waiter), plus a block copied per owner that came or went; per
    reader after a change, the new lanes' JSON, their blocks joined and one join of the answer (under a
    millisecond), or, when a lock's lane came or went, a pass over the view's queues and the lane blocks made
    again (a few milliseconds, no JSON made).
    """

    def __init__(self, mutex: threading.Lock, order: Callable[[], Iterable[str]], block: int = 256) -> None:
        """``mutex``: the view's, which the view holds around ``redraw`` and ``reset``, and ``drawn`` takes;
        ``order``: the names of the view's queues, in their order (called under ``mutex``); ``block``: lanes or
        owners per block of JSON."""
        self._mutex = mutex
        self._order = order
        self.block = block
        self._lanes: dict[str, Lane] = {}  # only locks that have edges
        self._names: list[str] | None = []  # the names of _lanes in the view's queue order (None: to find again)
        self._position: dict[str, int] = {}  # name -> its place in _names
        self._lane_blocks: list[LaneBlock] = []  # _names' lanes, ``block`` a block
        self._replaced: set[str] = set()  # names whose lane is another since the blocks were last made
        self._waiting: dict[Owner, int] = {}  # owner -> edges it waits on
        self._holding: dict[Owner, int] = {}  # owner -> edges that wait for it
        self._both: set[Owner] = set()  # owners in both: the only ones a cycle can go through
        self._owner_blocks: list[OwnerBlock] = []  # every owner of an edge, sorted by key, in blocks
        self._owner_firsts: list[OwnerKey] = []  # the first key of each owner block
        self.version = 0  # moves whenever an edge comes, goes or changes
        self._kept: Drawn | None = None

    # -- the view's side, under its mutex -----------------------------------------------------------------------

    def reset(self, locks: Mapping[str, HeldLike], queues: Mapping[str, Mapping[bytes, QueuedLike]]) -> None:
        """Draw everything again (after the view's full read)."""
        self._lanes, self._names = {}, None
        self._waiting, self._holding, self._both = {}, {}, set()
        moved: list[Owner] = []
        for name, entries in queues.items():
            edges = lane_edges(name, locks.get(name), entries)
            if edges:
                self._lanes[name] = Lane(edges)
                self._count(edges, 1, moved)
        self._both = {owner for owner in self._waiting if owner in self._holding}
        present = set(self._waiting).union(self._holding)
        self._set_owners(sorted(_entry(owner) for owner in present))
        self.version += 1

    def redraw(
        self, names: Iterable[str], locks: Mapping[str, HeldLike], queues: Mapping[str, Mapping[bytes, QueuedLike]]
    ) -> None:
        """Draw again the edges of ``names``, locks whose key or queue changed, from the view's state now."""
        moved: list[Owner] = []  # owners whose count of waits or of waiters came from or went to 0
        for name in names:
            old = self._lanes.get(name)
            edges = lane_edges(name, locks.get(name), queues.get(name))
            if old is None:
                if not edges:
                    continue  # the common case: a free lock taken or released, nobody queued
                self._lanes[name] = Lane(edges)
                self._names = None
                self._count(edges, 1, moved)
            elif old.edges == edges:
                continue
            else:
                if edges:
                    self._lanes[name] = Lane(edges)
                    self._replaced.add(name)
                    self._count(edges, 1, moved)  # before the old ones go: owners of both stay counted
                else:
                    del self._lanes[name]
                    self._names = None
                self._count(old.edges, -1, moved)
            self.version += 1
        if moved:
            self._place(moved)

    def _count(self, edges: tuple[Edge, ...], step: int, moved: list[Owner]) -> None:
        waiting, holding = self._waiting, self._holding
        for edge in edges:
            waiter, holder = edge.waiter, edge.holder
            count = waiting.get(waiter, 0) + step
            if count:
                waiting[waiter] = count
                if count == step:
                    moved.append(waiter)
            else:
                del waiting[waiter]
                moved.append(waiter)
            count = holding.get(holder, 0) + step
            if count:
                holding[holder] = count
                if count == step:
                    moved.append(holder)
            else:
                del holding[holder]
                moved.append(holder)

    def _place(self, moved: list[Owner]) -> None:
        """Bring the set of owners that both wait and are waited for, and the sorted owners, in line with the
        counts, for owners whose counts came from or went to 0."""
        waiting, holding, both = self._waiting, self._holding, self._both
        came: list[Owner] = []
        gone: list[Owner] = []
        for owner in set(moved):
            waits, waited_for = owner in waiting, owner in holding
            if waits and waited_for:
                both.add(owner)
            else:
                both.discard(owner)
            (came if waits or waited_for else gone).append(owner)
        if len(came) + len(gone) > 64:  # many at once (a burst of new waiters): a pass and a merge of sorted runs
            left = {_owner_key(owner) for owner in gone}
            entries = [entry for block in self._owner_blocks for entry in block.entries if entry[0] not in left]
            kept = len(entries)
            new = sorted(_entry(owner) for owner in came if not self._find(_owner_key(owner))[2])
            if new or kept != sum(len(block.entries) for block in self._owner_blocks):
                self._set_owners(sorted(entries + new))  # Timsort merges the two runs in one pass
        else:
            for owner in gone:
                self._remove(_owner_key(owner))
            for owner in came:
                self._insert(owner)

    # -- the sorted owners, in blocks --------------------------------------------------------------------------

    def _set_owners(self, entries: list[OwnerEntry]) -> None:
        size = self.block
        self._owner_blocks = [OwnerBlock(tuple(entries[i : i + size])) for i in range(0, len(entries), size)]
        self._owner_firsts = [block.entries[0][0] for block in self._owner_blocks]

    def _find(self, key: OwnerKey) -> tuple[int, int, bool]:
        """(the block where ``key`` is or would go, its place there, whether it is there)."""
        if not self._owner_blocks:
            return -1, 0, False
        b = max(0, bisect_right(self._owner_firsts, key) - 1)
        entries = self._owner_blocks[b].entries
        i = bisect_left(entries, (key,))
        return b, i, i < len(entries) and entries[i][0] == key

    def _insert(self, owner: Owner) -> None:
        key = _owner_key(owner)
        b, i, there = self._find(key)
        if there:
            return
        if b < 0:
            self._owner_blocks, self._owner_firsts = [OwnerBlock((_entry(owner, key),))], [key]
            return
        entries = self._owner_blocks[b].entries
        entries = entries[:i] + (_entry(owner, key),) + entries[i:]
        if len(entries) > 2 * self.block:  # split, so no block grows past twice the size
            half = len(entries) // 2
            self._owner_blocks[b : b + 1] = [OwnerBlock(entries[:half]), OwnerBlock(entries[half:])]
            self._owner_firsts[b : b + 1] = [entries[0][0], entries[half][0]]
        else:
            self._owner_blocks[b] = OwnerBlock(entries)
            self._owner_firsts[b] = entries[0][0]

    def _remove(self, key: OwnerKey) -> None:
        b, i, there = self._find(key)
        if not there:
            return
        entries = self._owner_blocks[b].entries
        entries = entries[:i] + entries[i + 1 :]
        if entries:
            self._owner_blocks[b] = OwnerBlock(entries)
            self._owner_firsts[b] = entries[0][0]
        else:
            del self._owner_blocks[b], self._owner_firsts[b]

    # -- the readers' side ---------------------------------------------------------------------------------------

    def drawn(self) -> Drawn:
        """The graph now: the Drawn kept while nothing changed, else a new one (taken under the view's mutex)."""
        kept = self._kept
        if kept is not None and kept.version == self.version:
            return kept
        with self._mutex:
            lanes, names, size = self._lanes, self._names, self.block
            if names is None:  # locks came or went: their order is the view's queues' (a pass over them)
                names = self._names = [name for name in self._order() if name in lanes] if lanes else []
                self._position = {name: i for i, name in enumerate(names)}
                self._lane_blocks = [
                    LaneBlock(tuple(lanes[name] for name in names[i : i + size])) for i in range(0, len(names), size)
                ]
            elif self._replaced:  # the same locks: the blocks of those replaced made again
                blocks = self._lane_blocks = self._lane_blocks.copy()
                for b in {self._position[name] // size for name in self._replaced}:
                    blocks[b] = LaneBlock(tuple(lanes[name] for name in names[b * size : (b + 1) * size]))
            self._replaced.clear()
            drawn = Drawn(self.version, self._lane_blocks, self._owner_blocks.copy(), bool(self._both))
            self._kept = drawn
        return drawn

    def edges(self) -> list[Edge]:
        return self.drawn().edges

    def cycles(self, edges: list[Edge]) -> list[tuple[Edge, ...]]:
        """``cycles(edges)``, but none at once when ``edges`` are those of the graph kept now and no owner in it
        both waits and is waited for (DeadlockTracker's ``rings``)."""
        kept = self._kept
        if kept is not None and kept._edges is edges and not kept.may_cycle:
            return []
        return cycles(edges)


def _entry(owner: Owner, key: OwnerKey | None = None) -> OwnerEntry:
    return (key if key is not None else _owner_key(owner), owner, pydantic_core.to_json(_owner_row(owner)))


def cycles(edges: Iterable[Edge]) -> list[tuple[Edge, ...]]:
    """The cycles among ``edges``, each once, each starting from its smallest (waiter, lock).

    Only an owner that waits and is waited for can be on a cycle, and with thousands of waiters there is usually
    none: walking all of them cost tens of milliseconds (bench/waits_scale.py) on each change. So the walk goes
    first over the edges of such owners only: each keeps all its edges, so it takes the edge the whole walk would,
    and a cycle is found there exactly when the whole walk finds one. Only then is the whole graph walked, which
    gives the cycles in its own order (the order in which the tracker first reports cycles that close together).
    """
    edges = list(edges)
    held = {edge.holder for edge in edges}
    suspects = [edge for edge in edges if edge.waiter in held]
    if not suspects or not _walk(suspects):
        return []
    return _walk(edges)


def _walk(edges: list[Edge]) -> list[tuple[Edge, ...]]:
    """Follow each owner's edge (the smallest (lock, holder) of its edges, one lock waited for at a time) from
    every owner in order; a walk that comes back to an owner on its own path has found a cycle."""
    out: dict[Owner, list[Edge]] = {}
    for edge in edges:
        out.setdefault(edge.waiter, []).append(edge)
    found: dict[tuple[tuple[Owner, str], ...], tuple[Edge, ...]] = {}
    done: set[Owner] = set()
    for start in sorted(out, key=_owner_key):
        path: list[Edge] = []
        index: dict[Owner, int] = {}
        node = start
        while node in out and node not in done and node not in index:
            index[node] = len(path)
            edge = min(out[node], key=lambda e: (e.lock, _owner_key(e.holder)))  # one lock waited for at a time
            path.append(edge)
            node = edge.holder
        if node in index:  # back to an owner on this path: a cycle from there
            ring = path[index[node] :]
            first = min(range(len(ring)), key=lambda i: (_owner_key(ring[i].waiter), ring[i].lock))
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
    #: The cycles of a snapshot (the view's: KeptGraph.cycles, which knows when there can be none).
    rings: Callable[[list[Edge]], list[tuple[Edge, ...]]] = cycles
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
        rings = {cycle_id(ring): ring for ring in self.rings(edges)}
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
