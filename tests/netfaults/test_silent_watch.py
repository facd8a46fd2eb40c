"""A watch connection gone silent (packets dropped: no RST, no FIN) ends within the bound its socket options set,
so a lock waiter on it re-reads instead of waiting until its own timeout.

What rescues a waiter whose watch stream is on a member it can no longer hear (lockd.etcd.client, lockd.session):
when the client's whole path to that member is cut, the session's keepalive (every TTL/3, on the same member)
fails first, the client fails over and closes that member's watch stream (``_fail_over`` -> ``close_watches``),
and the waiter re-reads through the next member; nothing in lockd re-reads periodically. The watch socket's own
options (``_KEEPALIVE`` in lockd.etcd.watch: TCP keepalive after 10 s idle, every 5 s, and TCP_USER_TIMEOUT 25 s)
are what is left when no request fails: a bare WatchHub (no session on its client), or a watch connection that
alone went silent while the client's other connections to the same member work (a stateful firewall or NAT on
the path that forgot that flow), or a stream left on a member the client's requests no longer go to.

Three etcd members on their own test hosts (tests/netns.py, tests/etcd_cluster.py), and side by side:
  * partition: a bare WatchHub on host c1 watches a key on e0 (a put made through e1 arrives: the stream works);
    c1 is cut from e0 and the key is deleted through e1. The watch must end with StreamBroken from a socket error
    (not a deletion it cannot hear, nor a close by anyone) within BOUND seconds of the cut.
  * forgotten connection: a lockd waiter on host c2 (client and session on e0) queues for a lock held through e1
    by the test; only its watch connection is dropped (``drop_connection``), so its session refreshes on, and no
    request fails: nothing but the watch socket can notice. The holder releases; the waiter must hold the lock
    within BOUND seconds of the release, its session never lost and its client never failed over, though its own
    acquire would wait WAIT_BUDGET seconds.

What makes it fail: without lockd's keepalive options (``_KEEPALIVE`` empty and no SO_KEEPALIVE of ours),
websocket-client's own defaults (keepalive after 30 s idle, 3 probes 10 s apart) end a silent watch about 60 s
after its last packet (62 s measured here), past BOUND, and the test fails at BOUND; with no keepalive at all, an
idle connection with nothing to send has no timer that could end it (a waiter with ``blocking=True`` would wait
for ever).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from lockd.etcd.client import EtcdClient, op_put
from lockd.lock import Mutex
from lockd.options import parse_backend_url
from lockd.session import Session
from tests.etcd_cluster import EtcdCluster
from tests.netns import TestNetwork
from tests.procs import ChildProcess

MEMBERS = ("e0", "e1", "e2")
#: Keepalive + user timeout end a silent connection ~25 s after its last packet; websocket-client's defaults
#: alone, ~60 s. The bound sits between, with room for a loaded machine; far below the waits' own budgets.
BOUND = 45.0
WAIT_BUDGET = 120.0
KEY = b"/silent-watch/key"
LOCK = "silent-watch-volume"


def _child(network: TestNetwork, host: str, mode: str, spec: dict[str, object]) -> ChildProcess:
    launcher = network.hosts[host].argv()
    return ChildProcess("-m", "tests.netfaults.silent_watch_child", mode, json.dumps(spec), launcher=launcher)


def _event_by(child: ChildProcess, name: str, deadline: float) -> dict[str, Any] | None:
    """The child's next ``name`` event if it comes before ``deadline`` (wall time), else None."""
    try:
        event = child.wait_event(name, timeout=max(0.1, deadline - time.time()))
    except AssertionError:
        if child.proc.poll() is not None:
            raise  # the child died: that is no answer about the watch
        return None
    return event if event["at"] < deadline else None


@pytest.mark.hosts(*MEMBERS, "c1", "c2")
def test_silent_watch_connection_ends_within_the_keepalive_bound(network: TestNetwork, tmp_path: Path) -> None:
    placements = [(network.hosts[m].ip, network.hosts[m].argv()) for m in MEMBERS]
    cluster = EtcdCluster(tmp_path / "etcd", placements=placements)
    children: list[ChildProcess] = []
    root: EtcdClient | None = None
    holder_session: Session | None = None
    cluster.start()
    try:
        e0, e1 = cluster.members[0], cluster.members[1]
        root = EtcdClient(parse_backend_url(f"lockd+etcd3+http://{e1.endpoint}"))
        holder_session = Session(root, 10.0, "silent-watch-holder")
        session = holder_session
        holder = Mutex(LOCK, lambda _deadline: session, "silent-watch-holder")
        assert holder.acquire(blocking=False)

        watcher = _child(network, "c1", "watch", {"member": e0.endpoint, "key": KEY.decode(), "budget": WAIT_BUDGET})
        waiter = _child(network, "c2", "wait", {"url": cluster.url(e0), "name": LOCK, "budget": WAIT_BUDGET})
        children += [watcher, waiter]
        watcher.wait_event("watching", timeout=30)
        root.txn([], [op_put(KEY, b"1")])
        watcher.wait_event("put", timeout=10)  # the stream to e0 carries a write made through e1
        waiter_port = int(waiter.wait_event("watching", timeout=30)["port"])

        network.cut("c1", ["e0"])
        network.drop_connection("c2", waiter_port)
        cut_at = time.time()
        watcher.send("fault on")
        root.delete(KEY)
        assert holder.release()
        released_at = time.time()

        # Both waits run out by the same deadline, so a failing run shows what each side did (or did not do).
        ended = _event_by(watcher, "ended", cut_at + BOUND)
        acquired = _event_by(waiter, "acquired", released_at + BOUND)
        print(f"watch ended: {ended and round(ended['at'] - cut_at, 1)} s after the cut; waiter held: "
              f"{acquired and round(acquired['at'] - released_at, 1)} s after the release")  # fmt: skip
        assert ended is not None, f"the partitioned watch was still open {BOUND:g}s after the cut"
        assert ended["outcome"] == "broken", f"the partitioned watch did not end by a socket error: {ended}"
        assert ended["reason"].startswith("watch stream failed"), ended
        assert acquired is not None, f"the waiter did not hold the lock {BOUND:g}s after the release"
        assert acquired["ok"] is True, f"the waiter did not get the lock: {acquired}"
        # Rescued by its watch socket alone: the session never lapsed and no request failed over.
        assert acquired["session_alive"] is True and acquired["failures"] == 0, acquired
        assert acquired["endpoint"] == e0.client_url, acquired
    finally:
        for child in children:
            child.stop()
        network.heal()
        if holder_session is not None:
            holder_session.close()
        if root is not None:
            root.close()
        cluster.stop()
