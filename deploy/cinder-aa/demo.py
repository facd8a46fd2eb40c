"""Run real Cinder services active/active on lockd, drive them through Cinder's REST API, and check the damage.

Started by deploy/cinder-aa/demo.sh (which makes the virtualenvs); run it directly with ``--help``. One run:

1. a 3-member etcd and two lockd sidecars on loopback (deploy/local-cluster.sh);
2. per mode, a fresh MariaDB database (``cinder-manage db sync``), then cinder-api (noauth), cinder-scheduler and
   two cinder-volume services with their own ``host``, ``state_path`` and ``lock_path`` and the same ``cluster``,
   all on RabbitMQ, all with the demo driver (lockd_demo_driver.py) on one shared directory:
   - mode ``lockd``: ``[coordination] backend_url = lockd+etcd3+http://...`` and ``LOCKD_PATCH_LOCKUTILS=1``;
   - mode ``control``: Cinder's defaults, ``file://`` coordination and oslo file locks: host-local, as the HA
     guide warns;
3. the workload through ``/v3``: concurrent creates, then extends, snapshots and duplicate concurrent deletes
   while one cinder-volume is SIGKILLed and restarted (its restart cleans up what it was doing), then deletes;
4. the checks: every resource terminal within the bound; the ledger equal to the files that exist after every
   phase; no file of a deleted resource; no driver operation done twice; both services did work.

Every process is started in its own process group and stopped by PID (group) on exit, success or not.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
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
        for name, argv in (
            ("api", [str(self.bin / "cinder-api"), "--config-file", control]),
            ("scheduler", [str(self.bin / "cinder-scheduler"), "--config-file", control]),
            *((f"volume-{v}", [str(self.bin / "cinder-volume"), "--config-file", self.conf(v)]) for v in volumes),
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
            if not waiting or time.monotonic() > deadline:
                if stuck_if_late:
                    self.outcome.stuck.update({f"{kind} {rid}": statuses[rid] for rid in waiting})
                return waiting
            time.sleep(0.5)

    def close(self) -> None:
        self.pool.shutdown()
        self.http.close()


def run_mode(args: argparse.Namespace, mode: str, etcd_url: str | None, run_id: str) -> Outcome:
    outcome = Outcome(mode)
    deployment = Deployment(args, mode, etcd_url, run_id)
    started = time.monotonic()
    try:
        log(f"{mode}: starting cinder-api, cinder-scheduler, 2 x cinder-volume (cluster {deployment.cluster})")
        deployment.start()
        work = Workload(deployment, outcome)
        try:
            drive(args, deployment, work, outcome)
        finally:
            work.close()
        check_operations(deployment, outcome)
    except Exception as exc:  # a failed run is reported, never a traceback without cleanup
        outcome.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        deployment.stop()
        outcome.seconds = time.monotonic() - started
    return outcome


def drive(args: argparse.Namespace, d: Deployment, work: Workload, outcome: Outcome) -> None:
    """Four phases, each settled (every resource terminal) and checked (ledger against files) before the next."""
    rng = random.Random(args.seed)
    n, bound = args.volumes, args.bound

    def create(count: int, tag: str) -> list[Callable[[], httpx.Response]]:
        body = {"volume": {"size": 1}}
        return [lambda i=i: work.request("POST", "/volumes", {"volume": {**body["volume"], "name": f"{tag}{i}"}})
                for i in range(count)]  # fmt: skip

    def ids(answers: list[httpx.Response], kind: str) -> list[str]:
        """The ids of the resources of ``kind`` that accepted creates answered (other answers have no such body)."""
        bodies = [a.json() for a in answers if a.status_code == 202 and a.content]
        return [body[kind]["id"] for body in bodies if isinstance(body, dict) and kind in body]

    log(f"{d.mode}: phase 1: {n} concurrent creates")
    vids = ids(work.all(create(n, "a")), "volume")
    work.settle("volume", vids, bound)
    check_ledger(d, outcome, "after the creates")

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
    sids = ids(work.all(calls), "snapshot")
    work.settle("volume", vids, bound)
    work.settle("snapshot", sids, bound)
    check_ledger(d, outcome, "after the extends, snapshots and duplicate deletes")

    # Phase 3: Cinder's cleanup at a restart re-runs a volume delete and turns a cut-short create into "error";
    # it does nothing for an extend or a snapshot delete cut short (they stay "extending"/"deleting" until an
    # operator resets them), so the SIGKILL lands among volume creates and deletes only.
    log(f"{d.mode}: phase 3: {len(extend)} volume deletes and {n // 2} creates; "
        f"cinder-volume 2 SIGKILLed after {args.kill_after:g}s and restarted")  # fmt: skip
    calls = [lambda v=v: work.request("DELETE", f"/volumes/{v}") for v in extend]
    calls += create(n // 2, "b")
    rng.shuffle(calls)
    killer = work.pool.submit(lambda: (time.sleep(args.kill_after), d.restart("volume-2")))
    vids += ids(work.all(calls), "volume")
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
    check_ledger(d, outcome, "after the kill and the restart's cleanup")

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
    sample, and which processes (host/pid) held the ledger lock: both services, in turn, if they interleave.
    """
    seen: dict[str, Any] = {"samples": 0, "max_held": 0, "max_waiters": 0, "busiest": [], "ledger_holders": []}
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


@contextlib.contextmanager
def etcd_cluster(state: Path) -> Iterator[tuple[str, str]]:
    """deploy/local-cluster.sh: 3 etcd members and 2 lockd sidecars; yields the lockd backend URL and the first
    sidecar's admin URL."""
    env = {**os.environ, "LOCKD_DEMO_DIR": str(state / "etcd")}
    script = str(REPO / "deploy" / "local-cluster.sh")
    subprocess.run([script, "start"], check=True, env=env, timeout=120)
    try:
        ports = dict(
            line.split("=", 1) for line in subprocess.run(
                [script, "env"], check=True, env=env, capture_output=True, text=True
            ).stdout.split() if "=" in line
        )  # fmt: skip
        first, *others = ports["ETCD_ENDPOINTS"].split(",")
        yield f"lockd+etcd3+http://{first}?endpoints={','.join(others)}", ports["LOCKD_URL_1"]
    finally:
        subprocess.run([script, "stop"], env=env, timeout=120)


def summary(lockd: Outcome | None, control: Outcome | None) -> tuple[bool, str]:
    parts, ok = [], True
    if lockd is not None:
        clean = not (lockd.errors or lockd.stuck or lockd.doubled or lockd.ledger_off or lockd.leftover_files)
        ok = clean and len(lockd.hosts) == 2 and lockd.switches > 0 and lockd.requests >= 100
        ledger = "ledger exact" if lockd.ledger_off == 0 else f"ledger off by {lockd.ledger_off}"
        parts.append(f"{lockd.requests} requests, {len(lockd.stuck)} stuck, {len(lockd.doubled)} doubled, {ledger}")
    if control is not None:
        damaged = control.ledger_off > 0 or control.doubled or control.leftover_files
        ok = ok and not control.errors and bool(damaged)
        parts.append(f"control (file locks): {len(control.doubled)} doubled, ledger off by {control.ledger_off}")
    return ok, "cinder active/active: " + "; ".join(parts)


def report(outcome: Outcome) -> None:
    log(
        f"{outcome.mode}: {outcome.requests} requests in {outcome.seconds:.0f}s; driver operations per service "
        f"{outcome.hosts}, {outcome.switches} switches between services in their order of start"
    )
    if outcome.locks_seen:
        log(f"{outcome.mode}: lockd sidecar's /v1/locks during the run: {outcome.locks_seen}")
    for what in [f.name for f in dataclasses.fields(Outcome) if f.type.startswith(("list", "dict[str, str]"))]:
        items = getattr(outcome, what)
        for item in list(items.items() if isinstance(items, dict) else items)[:10]:
            log(f"{outcome.mode}: {what}: {item}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", required=True, help="directory for configs, logs and the shared 'array'")
    parser.add_argument("--cinder-venv", required=True, help="virtualenv with cinder 29 and lockd installed")
    parser.add_argument("--mode", choices=("both", "lockd", "control"), default="both")
    parser.add_argument("--volumes", type=int, default=40, help="volumes created in phase 1 (default 40)")
    parser.add_argument("--array-delay", type=float, default=0.05, help="seconds per array call inside a lock")
    parser.add_argument("--kill-after", type=float, default=1.0, help="seconds into phase 2 to SIGKILL volume-2")
    parser.add_argument("--bound", type=float, default=180.0, help="seconds a resource may take to be terminal")
    parser.add_argument(
        "--quiet", type=float, default=30.0, help="seconds after the kill before asking Cinder for a workers cleanup"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", help="write both outcomes here as JSON")
    args = parser.parse_args()
    # A SIGTERM (a CI timeout, a service manager) unwinds like Ctrl-C, so every finally stops what it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:6]
    outcomes: dict[str, Outcome] = {}
    with etcd_cluster(state) as (etcd_url, sidecar):
        for mode in ("lockd", "control") if args.mode == "both" else (args.mode,):
            if mode == "lockd":
                with watching_locks(sidecar) as seen:
                    outcomes[mode] = run_mode(args, mode, etcd_url, run_id)
                outcomes[mode].locks_seen = seen
            else:
                outcomes[mode] = run_mode(args, mode, None, run_id)
            report(outcomes[mode])
    if args.json:
        Path(args.json).write_text(json.dumps({m: dataclasses.asdict(o) for m, o in outcomes.items()}, indent=1))
    ok, line = summary(outcomes.get("lockd"), outcomes.get("control"))
    print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
