"""lockd.api.waits.KeptGraph, the wait-for graph the lock view keeps as it applies its watch's batches, against
the graph drawn from scratch from the same view (``LockView.wait_edges``, ``readmodel.wait_rows``), after every
step of randomized runs of lock traffic: takes, queues, grants, releases, give-ups, lease losses, stock tooz
holders, keys written again by their holder, and full reads after a broken watch that missed some of it.

A drift of the kept graph (a lock whose edges were not drawn again, an owner counted wrong, a lane left in the
wrong place after its queue emptied) shows as a difference in the edges, in their order, or in the bytes of
``GET /v1/waits``. The owners are few, so holders also wait and cycles come and go: ``cycles`` (which walks the
owners that wait and are waited for first) is checked against a walk of the whole graph at each step too.
"""

from __future__ import annotations

import json
import random
import time

import pydantic_core
import pytest

from lockd.api import readmodel
from lockd.api.view import LockView
from lockd.api.waits import Edge, Owner, _walk, cycles
from lockd.etcd import keys
from lockd.etcd.client import KeyValue
from lockd.etcd.watch import Event

#: Owners: threads of processes (member, host, pid, lease); few enough that holders wait and cycles form.
PROCESSES = [(f"m{p}", f"host{p % 2}", 100 + p, 0x10 + p) for p in range(3)]
THREADS = (1, 2)
NAMES = [f"vol-{i}" for i in range(6)]


class Etcd:
    """Keys with etcd's revisions, and the watch events each change makes."""

    def __init__(self) -> None:
        self.kvs: dict[bytes, KeyValue] = {}
        self.revision = 1

    def txn(self, puts: list[tuple[bytes, bytes, int]], deletes: list[bytes]) -> list[Event]:
        """One revision: puts (key, value, lease) and deletes; returns its events."""
        self.revision += 1
        events = []
        for key, value, lease in puts:
            old = self.kvs.get(key)
            kv = KeyValue(key, value, old.create_revision if old else self.revision, self.revision,
                          old.version + 1 if old else 1, lease)  # fmt: skip
            self.kvs[key] = kv
            events.append(Event(False, kv))
        for key in deletes:
            if self.kvs.pop(key, None) is not None:
                events.append(Event(True, KeyValue(key, b"", 0, self.revision, 0, 0)))
        return events

    def under(self, prefix: bytes) -> list[KeyValue]:
        return [kv for key, kv in sorted(self.kvs.items()) if key.startswith(prefix)]


class Traffic:
    """Random lock traffic in lockd's key layout (lockd.lock), whatever the protocol would allow or not: the kept
    graph must equal the drawing from scratch for any state the view can be in."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.etcd = Etcd()
        self.count = 0

    def value(self, process: int, thread: int, waiter: str) -> bytes:
        member, host, pid, _ = PROCESSES[process]
        record = {"member": member, "host": host, "pid": pid, "acquired_at": round(time.time(), 3) + self.count,
                  "waiter": waiter, "thread": thread}  # fmt: skip
        return json.dumps(record).encode()

    def waiter_id(self, process: int) -> str:
        self.count += 1
        return f"{PROCESSES[process][3]:x}-{self.count}"

    def step(self) -> list[Event]:
        """One change of etcd, chosen at random, as the events of its revision (maybe none)."""
        rng, etcd = self.rng, self.etcd
        name = rng.choice(NAMES)
        lock = keys.lock_key(name)
        held = etcd.kvs.get(lock)
        queue = etcd.under(keys.queue_prefix(name))
        process, thread = rng.randrange(len(PROCESSES)), rng.choice(THREADS)
        lease = PROCESSES[process][3]
        kind = rng.choice(["take", "take", "queue", "queue", "queue", "grant", "release", "give_up", "requeue",
                           "requeue", "lost", "again", "stock", "old_entry", "status", "member"])  # fmt: skip
        if kind == "take" and held is None:  # a free lock: the holder queued first when others waited
            waiter = self.waiter_id(process)
            value = self.value(process, thread, waiter)
            puts = [(keys.queue_key(name, waiter), value, lease)] if queue and rng.random() < 0.5 else []
            return etcd.txn([*puts, (lock, value, lease)], [])
        if kind == "queue":
            waiter = self.waiter_id(process)
            return etcd.txn([(keys.queue_key(name, waiter), self.value(process, thread, waiter), lease)], [])
        if kind == "grant" and held is not None and queue:  # to the oldest entry: the key and its mark in one txn
            entry = min(queue, key=lambda kv: kv.create_revision)
            deletes = [kv.key for kv in queue if kv.value == held.value and kv.key != entry.key]
            return etcd.txn([(lock, entry.value, entry.lease), (entry.key, b"granted:" + entry.value, entry.lease)],
                            deletes)  # fmt: skip
        if kind == "release" and held is not None:
            return etcd.txn([], [lock, *(kv.key for kv in queue if kv.value == held.value)])
        if kind == "give_up" and queue:
            return etcd.txn([], [rng.choice(queue).key])
        if kind == "requeue" and queue:  # an entry deleted and put back as it was (same edge), in one batch
            entry = rng.choice(queue)
            return etcd.txn([], [entry.key]) + etcd.txn([(entry.key, entry.value, entry.lease)], [])
        if kind == "lost" and rng.random() < 0.3:  # a lease ends: its keys go in one revision, member record too
            return etcd.txn([], [key for key, kv in etcd.kvs.items() if kv.lease == lease])
        if kind == "again" and held is not None:  # the holder writes its key again: same hold, new token
            return etcd.txn([(lock, held.value, held.lease)], [])
        if kind == "stock" and held is None:  # stock tooz: 16 random bytes, no queue
            return etcd.txn([(lock, rng.randbytes(16), 0x99)], [])
        if kind == "old_entry":  # an older lockd's entry: no holder value, no owner
            return etcd.txn([(keys.queue_key(name, self.waiter_id(process)), b"", lease)], [])
        if kind == "status":  # watched, but no lock's business
            return etcd.txn([(keys.status_key("volume", name), b"available", 0)], [])
        if kind == "member":
            member = PROCESSES[process][0]
            return etcd.txn([(keys.member_key(member), json.dumps({"member": member}).encode(), lease)], [])
        return []


def resync(view: LockView, etcd: Etcd) -> None:
    """What the view's thread does after its watch broke: a full read, installed (lockd.api.view._resync)."""
    now = time.time()
    view._install(etcd.under(keys.TOOZ_LOCK_PREFIX), etcd.under(keys.QUEUE_PREFIX),
                  etcd.under(keys.MEMBER_PREFIX), etcd.revision, now, now)  # fmt: skip


def assert_same(view: LockView, step: int) -> None:
    drawn = view.graph.drawn()
    scratch = view.wait_edges()
    assert drawn.edges == scratch, f"the kept edges drifted at step {step}"
    assert drawn.body == pydantic_core.to_json(readmodel.wait_rows(scratch)), f"the answer drifted at step {step}"
    assert cycles(scratch) == _walk(scratch), f"cycles differ from the whole walk at step {step}"
    both = {edge.waiter for edge in scratch} & {edge.holder for edge in scratch}
    assert drawn.may_cycle == bool(both), f"the kept graph is wrong about cycles being possible at step {step}"
    checked = view._edges_to_check()  # what the deadlock check walks: nothing only when it could find nothing
    assert view.graph.cycles(checked) == _walk(scratch), f"the deadlock check's cycles differ at step {step}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_kept_graph_is_the_graph_drawn_from_scratch_after_every_change(seed: int) -> None:
    rng = random.Random(seed)
    traffic = Traffic(rng)
    view = LockView(client=None)  # type: ignore[arg-type]
    view.graph.block = 3  # blocks of JSON of 3 lanes or owners (256 in the sidecar): made, split, emptied often
    resync(view, traffic.etcd)
    seen_cycles = edges_most = resyncs = 0
    for step in range(1000):
        roll = rng.random()
        if roll < 0.02:  # the watch breaks: what changes meanwhile is never delivered; a full read follows
            for _ in range(rng.randrange(6)):
                traffic.step()
            resync(view, traffic.etcd)
            resyncs += 1
        else:  # one batch of the watch: one to four revisions, applied together as the view's thread does
            batch = [event for _ in range(rng.randrange(1, 5)) for event in traffic.step()]
            if batch:
                view._apply(batch)
        if roll < 0.5 or step % 50 == 0:  # a reader now and then: versions in between are never drawn
            assert_same(view, step)
            edges = view.graph.edges()
            edges_most = max(edges_most, len(edges))
            seen_cycles += bool(cycles(edges))
    assert_same(view, -1)
    # the run exercised what it is meant to: many edges at once, cycles, full reads
    assert edges_most >= 8 and seen_cycles >= 10 and resyncs >= 10, (edges_most, seen_cycles, resyncs)


def test_a_change_that_moves_no_edge_keeps_the_graph_and_its_answer() -> None:
    traffic = Traffic(random.Random(7))
    view = LockView(client=None)  # type: ignore[arg-type]
    resync(view, traffic.etcd)
    name = NAMES[0]
    holder, waiter = traffic.waiter_id(0), traffic.waiter_id(1)
    view._apply(traffic.etcd.txn([(keys.lock_key(name), traffic.value(0, 1, holder), 0x10)], []))
    view._apply(traffic.etcd.txn([(keys.queue_key(name, waiter), traffic.value(1, 1, waiter), 0x11)], []))
    drawn = view.graph.drawn()
    assert len(drawn.edges) == 1 and drawn.body
    view._apply(traffic.etcd.txn([(keys.status_key("volume", "x"), b"deleting", 0)], []))  # the revision moves
    view._apply(traffic.etcd.txn([(keys.lock_key(NAMES[1]), traffic.value(2, 1, "free"), 0x12)], []))
    assert view.graph.drawn() is drawn, "no edge moved: the same graph, JSON and all"


def test_a_burst_of_owners_in_one_batch_comes_and_goes_in_order() -> None:
    """Hundreds of owners in one batch take the graph's merge path rather than one insertion each."""
    etcd = Etcd()
    view = LockView(client=None)  # type: ignore[arg-type]
    view.graph.block = 16
    resync(view, etcd)

    def value(member: str, thread: int, waiter: str) -> bytes:
        return json.dumps({"member": member, "host": "h", "pid": 1, "acquired_at": 1.5, "waiter": waiter,
                           "thread": thread}).encode()  # fmt: skip

    def burst(numbers: range) -> list[Event]:
        events = []
        for i in numbers:  # two owners each: a holder thread of one process, a waiter thread of another
            name = f"burst-{i:03d}"
            events += etcd.txn([(keys.lock_key(name), value("holders", 1000 - i, f"h{i}"), 1)], [])
            events += etcd.txn([(keys.queue_key(name, f"w{i}"), value("waiters", i, f"w{i}"), 2)], [])
        return events

    view._apply(burst(range(0, 150, 2)))
    view._apply(burst(range(1, 150, 2)))  # these sort in between those
    assert len(view.graph.drawn().owners) == 300
    assert_same(view, 0)
    view._apply([event for i in range(0, 150, 3) for event in etcd.txn([], [keys.lock_key(f"burst-{i:03d}")])])
    assert len(view.graph.drawn().owners) == 200
    assert_same(view, 1)
    view._apply(etcd.txn([], [keys.queue_key("burst-001", "w1")]))  # and one by one again
    assert_same(view, 2)


def test_cycles_come_in_the_order_a_walk_of_the_whole_graph_finds_them() -> None:
    """The walk over owners that wait and are waited for only tells whether there is a cycle: the order of two
    cycles closing together is the whole walk's, which starts here from a waiter nobody waits for."""
    a, b1, b2, c1, c2 = Owner("a", "h", 1, 1), Owner("b", "h", 1, 1), Owner("b", "h", 1, 2), Owner("c", "h", 1, 1), \
        Owner("c", "h", 1, 2)  # fmt: skip
    edges = [Edge(b1, b2, "y1", None, 1), Edge(b2, b1, "y2", None, 2), Edge(c1, c2, "x1", None, 3),
             Edge(c2, c1, "x2", None, 4), Edge(a, c1, "z", None, 5)]  # fmt: skip
    found = cycles(edges)
    assert [ring[0].waiter for ring in found] == [c1, b1], "a reaches c's cycle before b's is walked"
    assert found == _walk(edges)
