"""A live one-node Pacemaker cluster running the guide's configuration (deploy/pacemaker/configure.sh): lockd and
real Cinder 29 cinder-volume as clones, with Cinder's API and scheduler beside the cluster, on a private etcd.

Needs root, corosync, pacemaker, pcs (scripts/install-system-deps.sh), MariaDB and RabbitMQ: without them the
tests are skipped with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.cinder_aa import cinder_venv, load_demo, missing_services, skip_unless_ci
from tests.etcd_process import EtcdMember, free_port
from tests.pacemaker.node import PacemakerNode, Peer, alive, missing_tools
from tests.procs import wait_for

REPO = Path(__file__).resolve().parents[2]
CONFIGURE = REPO / "deploy" / "pacemaker" / "configure.sh"
LOCKD_BIN = REPO / ".venv" / "bin" / "lockd"
# lockd's two monitors in configure.sh: is the process there (depth 0), does /readyz answer (OCF_CHECK_LEVEL=10)
PROCESS_CHECK_INTERVAL = 2.0
READYZ_CHECK_INTERVAL = 10.0
# What deploy/pacemaker/README.md adds to cinder.conf on the nodes: oslo.messaging's RPC listeners check their
# stop flag once per heartbeat_timeout_threshold / heartbeat_rate / 2 seconds when idle (at most 5), and
# cinder-volume stops its three one after another; with this, its stop (and so lockd's recovery) waits at most
# 0.5 s per listener instead of up to 5 (the README has the sources and the figures).
CINDER_VOLUME_CONF = "[oslo_messaging_rabbit]\nheartbeat_rate = 60\n"


def pacemaker_missing() -> str | None:
    if os.geteuid() != 0:
        return "Pacemaker tests need root (namespaces, corosync, pacemakerd)"
    tools = missing_tools()
    if tools:
        return f"missing {', '.join(tools)} (scripts/install-system-deps.sh installs them)"
    return missing_services()


def pid_in(path: Path) -> int | None:
    """The live PID written in ``path``, else None."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def cinder_volume_launcher(path: Path, cinder: Any, nodes: list[str]) -> None:
    """What a distribution's cinder-volume unit does, as one executable every node runs: the environment, then
    exec the service with this node's cinder.conf (own ``host``, same ``cluster``), picked by ``crm_node -n``.

    ocf:heartbeat:anything starts ``binfile`` through ``su -``, which clears the environment, so the demo's
    variables (its driver on PYTHONPATH, the lockutils patch) go into the script; the patched locks read their
    backend from cinder.conf, as on a real node (deploy/cinder/README.md).
    """
    for node in nodes:
        conf = Path(cinder.conf(node))  # <state>/<node>/cinder.conf
        conf.write_text(conf.read_text() + CINDER_VOLUME_CONF)
    env = cinder.env()
    exports = "".join(f"export {k}='{env[k]}'\n" for k in ("PYTHONPATH", "LOCKD_PATCH_LOCKUTILS"))
    conf = f"{cinder.dir}/$(crm_node -n)/cinder.conf"
    path.write_text(f"#!/bin/sh\n{exports}exec {cinder.bin / 'cinder-volume'} --config-file {conf}\n")
    path.chmod(0o755)


def configure(node: PacemakerNode, lockd_port: int, backend: str, launcher: Path) -> None:
    """Run deploy/pacemaker/configure.sh on ``node`` with this machine's paths. The paths are the same on every
    node and land in each node's own directories (/run is the node's tmpfs; /run/resource-agents and
    /var/log/pacemaker are bind mounts of its directory, see node.py)."""
    lockd_params = (
        f"binary={LOCKD_BIN} backend_url={backend} port={lockd_port} user=root state_dir=/run/lockd "
        "log_file=/var/log/pacemaker/lockd.log pid_file=/run/resource-agents/lockd.pid"
    )
    agent = (
        f"ocf:heartbeat:anything binfile={launcher} pidfile=/run/resource-agents/cinder-volume.pid "
        "logfile=/var/log/pacemaker/cinder-volume.out"
    )
    env = {**os.environ, "LOCKD_PARAMS": lockd_params, "CINDER_VOLUME_AGENT": agent}
    node.run("sh", str(CONFIGURE), env=env, timeout=120)


@dataclass
class Deployed:
    """The configured one-node cluster and what the tests look at."""

    node: PacemakerNode
    etcd: EtcdMember
    cinder: Any  # demo.Deployment
    demo: ModuleType
    base: Path
    lockd_url: str
    backend_url: str

    def lockd_pid(self) -> int | None:
        return pid_in(self.base / "rsctmp" / "lockd.pid")

    def cinder_volume_pid(self) -> int | None:
        return pid_in(self.base / "rsctmp" / "cinder-volume.pid")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.lockd_url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def roles(self) -> dict[str, str]:
        """Role of lockd and cinder-volume on this node ("" when crm_mon does not show it)."""
        roles = self.node.roles()
        return {rsc: roles.get((rsc, self.node.name), "Stopped") for rsc in ("lockd", "cinder-volume")}

    def all_started(self) -> bool:
        return self.roles() == {"lockd": "Started", "cinder-volume": "Started"} and self.ready()

    def crm_mon(self) -> str:
        return self.node.run("crm_mon", "-1", "-r", "--include=failures", check=False).stdout

    def lockd_locks(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LOCKD_BIN), "locks", "--url", self.lockd_url], capture_output=True, text=True, timeout=30
        )

    def create_volumes(self, count: int, tag: str, bound: float = 120) -> dict[str, str]:
        """Create ``count`` volumes through Cinder's API and wait until each is terminal; id -> status."""
        outcome = self.demo.Outcome("pacemaker")
        work = self.demo.Workload(self.cinder, outcome, threads=4)
        try:
            answers = work.all([
                lambda i=i: work.request("POST", "/volumes", {"volume": {"size": 1, "name": f"{tag}-{i}"}})
                for i in range(count)
            ])  # fmt: skip
            ids = [a.json()["volume"]["id"] for a in answers if a.status_code == 202]
            assert len(ids) == count, [a.text for a in answers]
        finally:
            work.close()
        return self.settle(ids, bound)

    def wait_cinder_volume_up(self, timeout: float = 120) -> None:
        """Cinder sees this node's cinder-volume up and its pool (the scheduler can place volumes)."""
        headers = self.demo.HEADERS

        def up() -> bool:
            try:
                services = httpx.get(f"{self.cinder.api}/os-services", headers=headers, timeout=10).json()["services"]
                pools = httpx.get(f"{self.cinder.api}/scheduler-stats/get_pools", headers=headers, timeout=10)
            except (httpx.HTTPError, ValueError, KeyError):
                return False
            pid = self.cinder_volume_pid()
            if pid is None:
                return False
            started = Path(f"/proc/{pid}").stat().st_ctime
            host = f"-{self.node.name}@demo"
            mine = [s for s in services if s["binary"] == "cinder-volume" and s["host"].endswith(host)]
            # a heartbeat of this very process: the row of the one before stays "up" for service_down_time
            fresh = [s for s in mine if s["state"] == "up" and s["updated_at"] and datetime.datetime.fromisoformat(
                s["updated_at"]).replace(tzinfo=datetime.timezone.utc).timestamp() > started]  # fmt: skip
            return bool(fresh) and bool(pools.json().get("pools"))

        wait_for(up, timeout, "Cinder to see cinder-volume up with its pool", interval=1)

    def settle(self, ids: list[str], bound: float = 120) -> dict[str, str]:
        """Wait until each volume is terminal (at most ``bound`` seconds); id -> status."""
        work = self.demo.Workload(self.cinder, self.demo.Outcome("pacemaker"), threads=4)
        try:
            work.settle("volume", ids, bound, stuck_if_late=False)
            return {rid: work.status("volume", rid) for rid in ids}
        finally:
            work.close()

    def operations(self) -> list[Any]:
        """The demo driver's operations log (start and end of every driver call), as runs."""
        return self.demo.read_runs(self.cinder)


class LogCursor:
    """Reads what Pacemaker logged after the cursor was made: the controller's actions, in the order they ran."""

    ACTION = re.compile(r"Initiating (\w+) operation (\S+?)_(\w+?)_\d+ ")
    RESULT = re.compile(r"Result of (\w+) operation for (\S+?) on \S+: ")

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path = path
        self.offset = 0 if from_start or not path.exists() else path.stat().st_size

    def _controller_lines(self) -> list[tuple[str, float]]:
        """(line, seconds since the epoch) of each controller line after the cursor, oldest first."""
        with open(self.path, errors="replace") as log:
            log.seek(self.offset)
            lines = log.read().splitlines()
        year = time.localtime().tm_year
        return [
            (line, datetime.datetime.strptime(f"{year} {line[:19]}", "%Y %b %d %H:%M:%S.%f").timestamp())
            for line in lines
            if "pacemaker-controld" in line
        ]

    def timed_events(self) -> list[tuple[tuple[str, str, str], float]]:
        """(("initiate"|"result", resource, operation), seconds since the epoch) per controller line, oldest first;
        monitors and probes left out."""
        found = []
        for line, stamp in self._controller_lines():
            if m := self.ACTION.search(line):
                event = ("initiate", m.group(2).split(":")[0], m.group(1))
            elif m := self.RESULT.search(line):
                event = ("result", m.group(2).split(":")[0], m.group(1))
            else:
                continue
            if event[2] not in ("monitor", "probe"):
                found.append((event, stamp))
        return found

    def first_failed_monitor(self, resource: str) -> tuple[float, str]:
        """When the first failed monitor of ``resource`` after the cursor came back (Pacemaker's clock), and its op
        key (``lockd_monitor_2000``): which monitor noticed. crm_mon cannot tell: it keeps one last failure per
        resource, so a second monitor failing right after overwrites the first."""
        failed = re.compile(rf"Result of monitor operation for {resource} on \S+: (?!ok\b|Cancelled\b).* key=(\S+)")
        return next((stamp, m.group(1)) for line, stamp in self._controller_lines() if (m := failed.search(line)))

    def events(self) -> list[tuple[str, str, str]]:
        return [event for event, _ in self.timed_events()]

    def position(self, event: tuple[str, str, str]) -> int:
        """Index of the first ``event`` logged after the cursor; fails if it never happened."""
        events = self.events()
        assert event in events, f"{event} not in Pacemaker's log: {events}"
        return events.index(event)

    def at(self, event: tuple[str, str, str]) -> float:
        """When the first ``event`` after the cursor was logged (seconds since the epoch)."""
        return next(stamp for seen, stamp in self.timed_events() if seen == event)

    def seconds(self, resource: str, operation: str) -> float:
        """How long the first ``operation`` of ``resource`` after the cursor took (initiated to result)."""
        return self.at(("result", resource, operation)) - self.at(("initiate", resource, operation))


@pytest.fixture(scope="module")
def prerequisites() -> None:
    why = pacemaker_missing()
    if why:
        skip_unless_ci(why)


@pytest.fixture(scope="module")
def pm_etcd(prerequisites: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    """An etcd of the module's own: the tests make it unreachable."""
    member = EtcdMember("pm", tmp_path_factory.mktemp("pm-etcd") / "data")
    member.start()
    yield member
    member.stop()


@pytest.fixture(scope="module")
def pm_backend_url(pm_etcd: EtcdMember) -> str:
    """The lock backend URL lockd and Cinder use, without options: ``pm_etcd`` alone. A module whose etcd has more
    members overrides it (test_etcd_rolling.py: ``lockd+etcd3+http://m0?endpoints=m1,m2``)."""
    return f"lockd+etcd3+http://{pm_etcd.endpoint}"


@pytest.fixture(scope="module")
def cinder_plane(pm_backend_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ModuleType]]:
    """Cinder's database, cinder-api and cinder-scheduler (outside Pacemaker, as on controllers), lockd mode."""
    demo = load_demo()
    args = argparse.Namespace(
        state=str(tmp_path_factory.mktemp("pm-cinder")), cinder_venv=str(cinder_venv()), array_delay=0.05
    )
    cinder = demo.Deployment(args, "lockd", pm_backend_url, uuid.uuid4().hex[:6])
    try:
        cinder.start(volumes=())
        yield cinder, demo
    finally:
        cinder.stop()


@pytest.fixture(scope="module")
def pacemaker_node(prerequisites: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PacemakerNode]:
    """A live one-node cluster (knet on 127.0.0.1); torn down by PID, and nothing may be left behind."""
    base = tmp_path_factory.mktemp("pm-node")
    node = PacemakerNode("node1", base, [Peer("node1", 1, "127.0.0.1")])
    try:
        node.start()
        node.wait_online()
        yield node
    finally:
        left = node.stop()
        assert not left, f"left behind after the cluster stopped: {left}"


@pytest.fixture(scope="module")
def deployed(
    pacemaker_node: PacemakerNode, pm_etcd: EtcdMember, pm_backend_url: str, cinder_plane: tuple[Any, ModuleType]
) -> Iterator[Deployed]:
    """configure.sh applied to the live cluster, with this machine's paths; waits until everything runs."""
    cinder, demo = cinder_plane
    base = pacemaker_node.base
    port = free_port()
    backend = f"{pm_backend_url}{'&' if '?' in pm_backend_url else '?'}timeout=2"
    cinder_volume_launcher(base / "cinder-volume.sh", cinder, [pacemaker_node.name])
    configure(pacemaker_node, port, backend, base / "cinder-volume.sh")
    cluster = Deployed(pacemaker_node, pm_etcd, cinder, demo, base, f"http://127.0.0.1:{port}", backend)
    wait_for(cluster.all_started, 120, "lockd and cinder-volume Started", interval=0.5)
    yield cluster
