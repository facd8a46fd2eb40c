"""A process out of file descriptors keeps the locks it holds; its acquires fail with a clear error (issue 14).

The fault: a holder's process has no descriptor left (a bulk attach with hundreds of waiters, or a leak
elsewhere in the service), and etcd restarts, so every kept-alive connection is dead. The session's keepalive
must open a new connection with no descriptor free.

Checked against the code before the pooled transport (463aa46, a connection per thread opened on demand): the
first test fails there, the keepalive gets EMFILE on every try, the lease runs out and the held lock is lost
(``lost: True``). Now the session reopens its own connection in place of the dead one, the lease and the lock
survive three TTLs of shortage, and a second lock object that must queue (a watch needs a socket) gets
``ResourceExhausted`` naming the cause instead of a failover.

The other tests cover the session connection's fallbacks for when its descriptor was taken by someone else
meanwhile: the spare descriptor it keeps, and closing an idle request connection; each alone opens a
connection where the control is refused, and the client's session connection uses them (checked to fail
with the client's session pool built without them: the wiring was missing in an earlier commit of this work).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url
from tests.etcd_process import EtcdMember
from tests.procs import REPO, ChildProcess

pytestmark = pytest.mark.faults

LEASE_TTL = 3
SHORTAGE = 3 * LEASE_TTL  # seconds the child stays out of descriptors after etcd restarted


def test_a_holder_out_of_descriptors_keeps_its_lock_and_acquires_fail_clearly(
    own_etcd: EtcdMember, lock_name: str
) -> None:
    url = f"lockd+etcd3+http://{own_etcd.endpoint}?lease_ttl={LEASE_TTL}&timeout=1"
    child = ChildProcess("-m", "tests.faults.fd_exhaustion_child", url, lock_name, str(SHORTAGE))
    direct = EtcdClient(parse_backend_url(f"lockd+etcd3+http://{own_etcd.endpoint}?timeout=5"))
    try:
        token = child.wait_event("held")["token"]
        assert child.wait_event("exhausted")["filled"] > 100
        own_etcd.stop()  # every kept-alive connection of the child is now dead
        own_etcd.start()
        child.send("go")
        outcomes = [child.wait_event("acquire", timeout=30) for _ in range(2)]
        after = child.wait_event("after", timeout=SHORTAGE + 30)
        kv = direct.get(b"/tooz/locks" + lock_name.encode())
        child.send("release")  # only now: reading the key after the child's release raced with it
        end = child.wait_event("end", timeout=30)
    finally:
        direct.close()
        child.stop()

    assert after == {"event": "after", "held": True, "lost": False}, child.stderr[-10:]
    assert kv is not None and kv.create_revision == token, "the held lock's key went while the process was short"
    assert end["still_owner"] and end["released"]
    for outcome in outcomes:
        assert outcome.get("error") == "ResourceExhausted", outcome
        assert "Too many open files" in outcome["message"], outcome


@pytest.mark.parametrize("fallback", ["reserve", "room"])
def test_the_session_connection_opens_with_no_descriptor_free(etcd: EtcdMember, fallback: str) -> None:
    """The session pool's fallbacks, each alone, in a process with every descriptor taken: the spare descriptor
    it keeps, or an idle request connection it may close. The control (neither) is refused with EMFILE."""
    results = _child_results(etcd, fallback, "none")
    assert results[fallback] == {"ok": True}, results
    assert results["none"]["error"] == "ResourceExhausted", results
    assert "Too many open files" in results["none"]["message"], results


def test_the_client_keeps_its_session_connection_with_no_descriptor_free(etcd: EtcdMember) -> None:
    """The client wires those fallbacks to its session's connection: closed, its number taken, every descriptor
    gone, a keepalive still goes out. (Without the wiring: ResourceExhausted, and the lease would run out.)"""
    assert _child_results(etcd, "client")["client"] == {"ok": True}


def _child_results(etcd: EtcdMember, *modes: str) -> dict[str, object]:
    results = {}
    for mode in modes:
        run = subprocess.run(
            [sys.executable, "-m", "tests.faults.pool_reserve_child", etcd.endpoint, mode],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        results[mode] = json.loads(run.stdout.strip().splitlines()[-1]) if run.stdout.strip() else run.stderr
    return results
