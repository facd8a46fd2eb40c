"""cinder-volume runs under eventlet: lockd's blocking sockets and keepalive thread must work green."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "scripts" / "eventlet_client.py"


def test_green_threads_exclude_each_other_and_the_lease_stays_alive(etcd, lock_name) -> None:
    url = f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=2&timeout=2"
    out = subprocess.run(
        [sys.executable, "-W", "ignore", str(SCRIPT), url, lock_name], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    marks = result["marks"]
    assert len(marks) == 40
    # every enter is followed by the same green thread's exit: no interleaving inside the lock
    assert all(marks[k] == marks[k + 1] for k in range(0, 40, 2))
    assert result["still_owner"] is True


def test_closing_watch_streams_under_eventlet_leaves_no_reader_on_a_reused_descriptor(etcd) -> None:
    """The watch hub's reader, not close(), closes the socket: a green reader blocked on a descriptor closed
    under it woke on the next socket given that number and failed (an ERROR in cinder-volume's log during an etcd
    upgrade, 30 of 30 rounds here before)."""
    script = Path(__file__).parent / "scripts" / "watch_close_eventlet.py"
    done = subprocess.run(
        [sys.executable, str(script), f"ws://{etcd.endpoint}/v3/watch", "30"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"reader_failures": 0}
