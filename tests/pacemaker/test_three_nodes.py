"""Three Pacemaker nodes on one machine, one cut off: its clones stop, the others keep serving Cinder.

Each node is a test host of tests/netns.py (a network namespace on a bridge) plus a mount namespace (node.py);
corosync speaks knet over the bridge. The services the nodes share stay where they are (etcd,
MariaDB and RabbitMQ on the machine's loopback) and reach each node through a relay pair: socat listening on the
node's own 127.0.0.1:PORT, forwarding over a unix socket to socat in the machine's namespace. Cutting a node
drops every packet of its link (``isolate``) *and* stops its relays, so it loses the cluster, etcd and Cinder's
database and queue at once.

Not run by default (about 4 minutes, three cinder-volume services): LOCKD_MULTINODE=1 runs it, as
docs/operations.md shows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.netns import TestNetwork
from tests.pacemaker.conftest import cinder_volume_launcher, configure, pid_in
from tests.pacemaker.node import PacemakerNode, Peer, describe, pids_mentioning
from tests.procs import wait_for

pytestmark = [
    pytest.mark.pacemaker,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.environ.get("LOCKD_MULTINODE") != "1", reason="multi-node run: set LOCKD_MULTINODE=1"),
]

NODES = 3
LOCKD_PORT = 7170  # the same on every node: each has its own loopback


class Relays:
    """TCP ports of the machine's loopback offered on each node's loopback (see the module docstring)."""

    def __init__(self, base: Path, ports: list[int]) -> None:
        self.base, self.ports = base, ports
        self.procs: dict[int, list[subprocess.Popen[bytes]]] = {}

    def start(self, index: int, netns: str) -> None:
        procs = []
        for port in self.ports:
            sock = self.base / f"relay-n{index}-{port}.sock"
            sock.unlink(missing_ok=True)
            procs.append(subprocess.Popen(
                ["socat", f"UNIX-LISTEN:{sock},fork", f"TCP:127.0.0.1:{port}"], stderr=subprocess.DEVNULL
            ))  # fmt: skip
            wait_for(sock.exists, 10, f"relay socket {sock}")
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", netns, "socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
                 f"UNIX-CONNECT:{sock}"], stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        self.procs[index] = procs

    def stop(self, index: int) -> None:
        for proc in self.procs.pop(index, []):
            proc.kill()
            proc.wait(10)
        for pid in pids_mentioning(f"relay-n{index}-"):  # forked per-connection children
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)

    def stop_all(self) -> None:
        for index in list(self.procs):
            self.stop(index)


@pytest.fixture
def three_nodes(
    tmp_path: Path, pm_etcd: Any, cinder_plane: tuple[Any, Any]
) -> Iterator[tuple[list[PacemakerNode], TestNetwork, Relays, Any, Any]]:
    cinder, demo = cinder_plane
    net = TestNetwork([f"node{i}" for i in range(1, NODES + 1)])
    relays = Relays(tmp_path, [3306, 5672, pm_etcd.client_port])
    peers = [Peer(f"node{i}", i, net.hosts[f"node{i}"].ip) for i in range(1, NODES + 1)]
    nodes = [PacemakerNode(p.name, tmp_path / p.name, peers, netns=net.hosts[p.name].netns) for p in peers]
    left: list[str] = []
    try:
        net.create()
        for i, node in enumerate(nodes, 1):
            relays.start(i, node.netns)
            node.start()
        for node in nodes:
            node.wait_online(120)
        yield nodes, net, relays, cinder, demo
    finally:
        for node in nodes:  # each node's own teardown, whatever happened to the others'
            try:
                left += node.stop()
            except Exception as exc:  # noqa: BLE001 - reported below, after the rest is torn down
                left.append(f"{node.name}: teardown failed: {exc!r}")
        relays.stop_all()
        # Whatever still runs in a node's network namespace (the relays are gone now) was left by the test:
        # it is named, killed, and fails the test.
        for name in net.hosts:
            for pid in net.pids(name):
                left.append(f"in {name}'s network namespace: {describe(pid)}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(net.pids(name) for name in net.hosts), 10, "the namespaces' processes killed")
        net.close()
    assert not left, f"left behind: {left}"


def node_state(node: PacemakerNode) -> dict[str, Any]:
    """Roles of both clones on this node (in its own view), its PIDs, and whether its lockd answers /readyz."""
    roles = node.roles()
    ready = node.run(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{LOCKD_PORT}/readyz", check=False
    ).stdout
    return {
        "lockd": roles.get(("lockd", node.name), "Stopped"),
        "cinder-volume": roles.get(("cinder-volume", node.name), "Stopped"),
        "lockd_pid": pid_in(node.base / "rsctmp" / "lockd.pid"),
        "cinder_volume_pid": pid_in(node.base / "rsctmp" / "cinder-volume.pid"),
        "ready": ready == "200",
    }


def started(node: PacemakerNode) -> bool:
    state = node_state(node)
    return state["lockd"] == state["cinder-volume"] == "Started" and state["ready"]


def volume_hosts_up(cinder: Any, demo: Any) -> set[str]:
    try:
        services = httpx.get(f"{cinder.api}/os-services", headers=demo.HEADERS, timeout=10).json()["services"]
    except (httpx.HTTPError, ValueError, KeyError):
        return set()
    return {s["host"] for s in services if s["binary"] == "cinder-volume" and s["state"] == "up"}


def run_volumes(cinder: Any, demo: Any, creates: int, deletes: list[str], tag: str) -> dict[str, str]:
    """Creates and deletes at once through Cinder's API, settled; id -> status of every volume touched."""
    outcome = demo.Outcome("pacemaker-3")
    work = demo.Workload(cinder, outcome, threads=8)
    try:
        calls = [lambda i=i: work.request("POST", "/volumes", {"volume": {"size": 1, "name": f"{tag}-{i}"}})
                 for i in range(creates)]  # fmt: skip
        calls += [lambda v=v: work.request("DELETE", f"/volumes/{v}") for v in deletes]
        answers = work.all(calls)
        ids = [a.json()["volume"]["id"] for a in answers[:creates] if a.status_code == 202] + deletes
        work.settle("volume", ids, 180, stuck_if_late=False)
        return {rid: work.status("volume", rid) for rid in ids}
    finally:
        work.close()


def test_a_cut_off_node_stops_its_clones_and_the_others_keep_serving_cinder(three_nodes: Any) -> None:
    nodes, net, relays, cinder, demo = three_nodes
    first, cut = nodes[0], nodes[-1]
    launcher = cinder.dir / "cinder-volume.sh"
    cinder_volume_launcher(launcher, cinder, [node.name for node in nodes])
    backend = f"lockd+etcd3+http://127.0.0.1:{relays.ports[2]}?timeout=2"
    configure(first, LOCKD_PORT, backend, launcher)
    wait_for(lambda: all(started(node) for node in nodes), 240, "lockd and cinder-volume Started on every node", 1)
    wait_for(lambda: len(volume_hosts_up(cinder, demo)) == NODES, 180, "Cinder sees three volume services up", 1)
    print("\n" + first.run("crm_mon", "-1", "-r").stdout)

    before = run_volumes(cinder, demo, 9, [], "before")
    assert set(before.values()) == {"available"}, before

    survivors = {node.name: node_state(node) for node in nodes[:-1]}
    cut_at = time.time()
    net.isolate(f"node{NODES}")
    relays.stop(NODES)
    # The cut node: no quorum, so Pacemaker stops everything it runs (cinder-volume first).
    wait_for(lambda: not node_state(cut)["lockd_pid"] and not node_state(cut)["cinder_volume_pid"], 240,
             "the cut node's lockd and cinder-volume stopped", 1)  # fmt: skip
    cut_view = cut.run("crm_mon", "-1", "-r", check=False).stdout
    assert "partition WITHOUT quorum" in cut_view, cut_view
    # The others: the cut node is offline, their own clones never moved.
    wait_for(lambda: f"OFFLINE: [ {cut.name} ]" in first.run("crm_mon", "-1").stdout, 60, "the cut node offline", 1)
    print("\n" + first.run("crm_mon", "-1", "-r").stdout + "\n--- the cut node's view ---\n" + cut_view)

    doomed = list(before)[:4]
    during = run_volumes(cinder, demo, 9, doomed, "during")
    assert all(during[v] == "deleted" for v in doomed), during
    assert all(during[v] == "available" for v in during if v not in doomed), during
    healed_at = time.time()
    for node in nodes[:-1]:
        state = node_state(node)
        assert state["lockd"] == state["cinder-volume"] == "Started" and state["ready"], (node.name, state)
        assert (state["lockd_pid"], state["cinder_volume_pid"]) == (
            survivors[node.name]["lockd_pid"],
            survivors[node.name]["cinder_volume_pid"],
        ), f"{node.name}'s clones were restarted by another node's cut"
    runs = [run for run in demo.read_runs(cinder) if cut_at + 1 < run.start < healed_at]
    hosts = {run.host.rsplit("-", 1)[-1] for run in runs}
    assert runs and not any(h.startswith(cut.name) for h in hosts), hosts
    outcome = demo.Outcome("pacemaker-3")
    demo.check_operations(cinder, outcome)
    demo.check_ledger(cinder, outcome, "after the cut")
    assert not outcome.doubled and outcome.ledger_off == 0, (outcome.doubled, outcome.ledger_notes)
    print(f"during the cut: {len(runs)} driver operations on {sorted(hosts)}")

    net.heal(f"node{NODES}")
    relays.start(NODES, net.hosts[f"node{NODES}"].netns)
    wait_for(lambda: all(started(node) for node in nodes), 240, "every node Started again after the heal", 1)
    after = run_volumes(cinder, demo, 6, [], "after")
    assert set(after.values()) == {"available"}, after
    print("\n" + first.run("crm_mon", "-1", "-r").stdout)
