"""A timed acquire returns by its deadline while its host is cut off from every etcd member.

Three etcd members on test hosts of their own, a lockd client on host c1 (``timeout=1``: each request may try
each of the three members for a second). The test holds the lock from the root namespace; the client calls
``acquire(blocking=WAIT)``, is cut off (iptables DROP: silence, not refusals) 0.3 s into the wait and kept off
for longer than the wait:

  * live session: ``lease_ttl=15``, cut for 8 s: the session outlives the cut;
  * lease runs out: ``lease_ttl=3``, cut for 12 s: the session is lost 3 s into the cut, and the acquire goes on
    "on a new session" (the nemesis' hang, and the issue's 12.0 s for a 5 s wait: the new session's lease grant
    went out with no regard for the deadline). The cut outlasts the bound below by 3 s, so an acquire that waits
    for the network cannot be let out by the heal in time to pass.

The acquire must return False (its enqueue was answered before the cut) within the wait plus one request in
flight, each request trying every member for its timeout: ``WAIT + 3 x 1 s``, plus SLACK for a loaded machine.
After the heal nothing of it may be left in etcd (its queue entry goes; with the session alive, by a delete,
not by the lease), and the next acquire works.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lockd.etcd.client import EtcdClient
from lockd.lock import Mutex
from lockd.options import parse_backend_url
from lockd.session import Session
from tests.etcd_cluster import EtcdCluster
from tests.etcd_process import queue_entries
from tests.netns import TestNetwork
from tests.procs import ChildProcess, wait_for

MEMBERS = ("e0", "e1", "e2")
WAIT = 5.0
REQUEST_TIMEOUT = 1.0
#: The machine's own delays (process scheduling on 2 loaded cores), not a protocol term.
SLACK = 1.0
BOUND = WAIT + len(MEMBERS) * REQUEST_TIMEOUT + SLACK
NAME = "timed-acquire-volume"


@pytest.mark.hosts(*MEMBERS, "c1")
@pytest.mark.parametrize(("lease_ttl", "cut_for"), [(15, 8.0), (3, 12.0)], ids=["live-session", "lease-runs-out"])
def test_a_timed_acquire_returns_by_its_deadline_while_its_host_is_cut_off(
    network: TestNetwork, tmp_path: Path, lease_ttl: int, cut_for: float
) -> None:
    placements = [(network.hosts[m].ip, network.hosts[m].argv()) for m in MEMBERS]
    cluster = EtcdCluster(tmp_path / "etcd", placements=placements)
    cluster.start()
    child: ChildProcess | None = None
    root = EtcdClient(parse_backend_url(cluster.url(cluster.members[1])))
    holder_session = Session(root, 60.0, "timed-acquire-holder")
    try:
        holder = Mutex(NAME, lambda _deadline: holder_session, "timed-acquire-holder")
        assert holder.acquire(blocking=False)
        url = cluster.url(cluster.members[0], lease_ttl=lease_ttl, timeout=REQUEST_TIMEOUT)
        spec = {"url": url, "name": NAME, "wait": WAIT}
        child = ChildProcess(
            "-m", "tests.netfaults.timed_acquire_child", json.dumps(spec), launcher=network.hosts["c1"].argv()
        )
        lease = child.wait_event("ready", timeout=60)["lease"]

        child.send("acquire")
        child.wait_event("started")
        time.sleep(0.3)
        network.isolate("c1")
        cut_at = time.monotonic()
        result = child.wait_event("acquired", timeout=WAIT + 60)
        print(f"\nlease_ttl={lease_ttl}: the timed acquire ended after {result['took']:.2f}s "
              f"(wait {WAIT:g}s, bound {BOUND:g}s): {result}")  # fmt: skip
        log = "".join(child.stderr[-60:])
        assert result.get("ok") is False, f"not False as a wait that ran out: {result}\n{log}"
        assert result["took"] <= BOUND, f"the {WAIT:g}s acquire took {result['took']:.1f}s, past {BOUND:g}s\n{log}"

        time.sleep(max(0.0, cut_at + cut_for - time.monotonic()))
        network.heal()
        wait_for(lambda: queue_entries(root, NAME) == [], 30, "the timed-out waiter's queue entry to be deleted")
        if lease_ttl > cut_for:
            child.send("session")  # the entry went by a delete: the session that queued it is still alive
            assert child.wait_event("session")["lease"] == lease
        assert holder.held()  # and the lock is still the test's

        assert holder.release()
        child.send("acquire")
        child.wait_event("started")
        assert child.wait_event("acquired", timeout=30).get("ok") is True
        child.send("release")
        assert child.wait_event("released").get("ok") is True
    finally:
        network.heal()
        if child is not None:
            child.stop()
        holder_session.close()
        root.close()
        cluster.stop()
