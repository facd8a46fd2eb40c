"""lockd.api.readmodel.waits_json (GET /v1/waits) on a view filled in memory, and the timeline's colours."""

from __future__ import annotations

import json

from lockd.api import readmodel
from lockd.api.models import OwnerOut, WaitEdgeOut, WaitsOut
from lockd.api.view import HeldLock, LockView, QueuedWaiter
from lockd.api.waits import Owner
from lockd.console.snapshot import PALETTE, _colours
from lockd.etcd import keys
from lockd.lock import Holder


def _view(locks: int) -> LockView:
    """A view never started (no etcd): lock ``i`` held by a thread of process ``i % 3``, waited for by another."""
    view = LockView(client=None)  # type: ignore[arg-type]
    for i in range(locks):
        name = f"lock-{i}"
        holder = Holder(f"m{i % 3}", "host", 100 + i % 3, 1.0, f"h{i}", 1000 + i)
        waiter = Holder(f"m{3 + i % 3}", "host", 200 + i % 3, 2.0 + i, f"w{i}", 2000 + i)
        view._locks[name] = HeldLock(name, holder, 10 + i, 1, None)
        view._queues[name] = {keys.queue_key(name, f"w{i}"): QueuedWaiter(f"w{i}", 20 + i, 1, waiter)}
    view.revision = 7
    view.graph.reset(view._locks, view._queues)  # as the view's full read does
    return view


def test_the_answer_is_the_models_answer_and_is_kept_until_the_graph_moves() -> None:
    view = _view(50)
    body = readmodel.waits_json(view)
    edges = view.wait_edges()

    def out(o: Owner) -> OwnerOut:
        return OwnerOut(member=o.member, host=o.host, pid=o.pid, thread=o.thread)

    answer = WaitsOut.model_validate_json(body)
    assert answer.edges == [
        WaitEdgeOut(waiter=out(e.waiter), holder=out(e.holder), lock=e.lock, since=e.since) for e in edges
    ]
    owners = {out(o).model_dump_json() for e in edges for o in (e.waiter, e.holder)}
    assert sorted(o.model_dump_json() for o in answer.owners) == sorted(owners), "each owner once"
    assert readmodel.waits_json(view) is body, "kept while the graph stands"
    name = "lock-0"
    del view._queues[name]
    view.graph.redraw([name], view._locks, view._queues)  # as the view's event path does
    assert len(json.loads(readmodel.waits_json(view))["edges"]) == 49, "built again once it moved"


def test_longest_waits_come_first_and_are_counted_all() -> None:
    total, edges = readmodel.longest_waits(_view(30), 5)
    assert total == 30 and [e.lock for e in edges] == [f"lock-{i}" for i in range(5)]


def test_up_to_a_palette_of_hosts_never_share_a_colour() -> None:
    hosts = [f"node{i}" for i in range(1, len(PALETTE) + 1)]
    colours = _colours(hosts)
    assert len(set(colours.values())) == len(PALETTE)
    assert _colours(reversed(hosts)) == colours, "the same hosts, the same colours, in whatever order they come"
