"""The cluster fixture's teardown (node.py) leaves nothing behind, even a process whose command line names no path
of the test: found by the node's mount namespace, killed, and reported.

A 3-node run once leaked a Pacemaker-started ``lockd serve`` (cwd /var/lib/pacemaker/cores): the teardown looked
for processes by the node directory in their command line, and lockd's names only namespace paths. Here a detached
process of that kind is planted in a live node; matching by command line again makes this test fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pacemaker.node import PacemakerNode, Peer, alive

pytestmark = [pytest.mark.pacemaker, pytest.mark.timeout(300)]


def test_teardown_kills_and_reports_a_stray_process_of_the_node(prerequisites: None, tmp_path: Path) -> None:
    node = PacemakerNode("node1", tmp_path, [Peer("node1", 1, "127.0.0.1")])
    stray = None
    try:
        node.start()
        node.wait_online()
        # like the agent's `setsid lockd serve ... &`: its own session, parent gone, Pacemaker's cwd
        started = node.run("sh", "-c", "cd /var/lib/pacemaker/cores && setsid sleep 3600 </dev/null >/dev/null 2>&1 & "
                           "echo $!")  # fmt: skip
        stray = int(started.stdout.strip())
        assert alive(stray)
        assert str(tmp_path) not in Path(f"/proc/{stray}/cmdline").read_text()
    finally:
        left = node.stop()
    assert any(entry.startswith(f"{stray}: sleep 3600") for entry in left), left
    assert "cwd /var/lib/pacemaker/cores" in " ".join(left), left
    assert not alive(stray)
