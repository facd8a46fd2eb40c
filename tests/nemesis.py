"""A seeded random schedule of network and process faults (a Jepsen-style nemesis) against lockd, with stock tooz
as the control in the same run, on test hosts in network namespaces.

Theory of operation
-------------------
Five hosts (tests/netns.py): ``e0``..``e2`` each run one member of a three-member etcd cluster, ``c0`` and ``c1``
run the clients. On each client host run ``lockd_procs`` lockd client processes and one stock tooz
(``etcd3+http``) process, each with ``threads`` threads (tests/nemesis_client.py): lock, write the resource's
status in the etcd store and in MariaDB (through its UNIX socket, so a client cut off from etcd can still reach
the database, which is when fencing matters), release. lockd clients write fenced and fail over among all
members; stock clients write unfenced and talk to their host's own member, as tooz's driver does. The two
systems use different lock names, so each is judged on its own, under the very same faults at the same moments.

The nemesis picks a fault at random (seeded; the first eight are one of each kind, in a seeded order), holds it
for a random time, heals it, pauses, and picks again:

  isolate-client   a client host loses its link (every packet vanishes)
  isolate-twice    a client host cut off for longer than the acquire wait, back for 0.6 s, cut off again for
                   longer than the wait (the shape of a hang the checker once found: a timed acquire that waited
                   for the network instead of its deadline)
  cut-own-member   a client host cannot reach its own etcd member; the others it can (failover must carry it)
  minority-leader  the etcd leader is cut off from both other members (clients can still reach it)
  lossy            30 % of a client host's packets dropped, both ways, out only or in only
  slow             200 ms added to each of a client host's packets, both ways or out only
  kill-member      an etcd member killed (-9), restarted at the heal
  freeze-host      every client process of a host stopped (SIGSTOP, as a frozen VM), resumed at the heal

``isolate-client`` and ``freeze-host`` are aimed: they wait (up to 3 s) until a control client on that host
holds a lock, read from the tail of its history, so the control's exposure does not rest on luck. A stock
client holds for about 0.1 s of each cycle and spends the rest polling, so unaimed, two CI runs of the short
schedule happened to freeze or cut no stock holder and the control showed nothing. lockd is hit at whatever
point its clients are then, as before.

An observer in the root namespace watches the lock keys on every member and notes when each was deleted (the
earliest any member told). After the last heal the clients run on for ``recover`` seconds, then stop. The
checker (tests/history.py) reads the clients' histories and reports, per system: overlapping holds, token order,
stale writes accepted, holds the server ended while the client still believed in them, calls that ran past
their bound, clients that did not work again after the heal; and the figures (acquisitions, writes, lead times,
throughput and the longest gap without an acquisition per fault kind).

Run: ``python -m tests.nemesis --seed 7 --duration 600`` (root; prints a report, ``--json`` for the raw one);
tests/faults/test_nemesis.py runs a short schedule in CI.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lockd.api.view import LockView
from lockd.errors import BackendError
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.etcd.watch import StreamBroken
from lockd.options import parse_backend_url
from tests import history
from tests.etcd_cluster import EtcdCluster
from tests.netns import TestNetwork
from tests.procs import ChildProcess

FAULTS = (
    "isolate-client",
    "isolate-twice",
    "cut-own-member",
    "minority-leader",
    "lossy",
    "slow",
    "kill-member",
    "freeze-host",
)
#: isolate-twice: how long the link comes back between its two cuts.
TWICE_GAP = 0.6
MEMBERS, CLIENT_HOSTS = ("e0", "e1", "e2"), ("c0", "c1")
MYSQL_SOCKET = "/run/mysqld/mysqld.sock"


@dataclass
class Settings:
    seed: int = 1
    duration: float = 90.0  # of the fault schedule; the clients run on for ``recover`` after it
    lease_ttl: float = 3.0
    request_timeout: float = 1.0
    acquire_timeout: float = 5.0
    recover: float = 12.0
    lockd_procs: int = 2  # per client host
    threads: int = 2  # per process
    names: int = 3  # lock names per system
    stop_timeout: float = 90.0  # per client process, after its stdin closed, to report "done"
    #: The same for the stock control's processes (None: ``stop_timeout``); a run that only reports the control's
    #: stop problems need not wait as long for a control process that cannot stop (tests/planned.py).
    control_stop_timeout: float | None = None


@dataclass
class Fault:
    kind: str
    target: str
    start: float
    end: float = 0.0


@dataclass
class Rig:
    settings: Settings
    network: TestNetwork
    cluster: EtcdCluster
    workdir: Path
    sql_url: str
    clients: dict[str, list[tuple[str, ChildProcess]]] = field(default_factory=dict)  # host -> [(system, proc)]


class Observer:
    """Watches ``/tooz/locks`` on each member separately; the first member to report a key's deletion wins."""

    def __init__(self, endpoints: list[str]) -> None:
        self.deleted: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients = [EtcdClient(parse_backend_url(f"lockd+etcd3+http://{e}?timeout=1")) for e in endpoints]
        self._threads = [threading.Thread(target=self._follow, args=(c,), daemon=True) for c in self._clients]
        for t in self._threads:
            t.start()

    def _follow(self, client: EtcdClient) -> None:
        prefix = keys.lock_key("")
        created: dict[bytes, int] = {}
        revision = 1
        while not self._stop.is_set():
            try:
                stream = client.watch(prefix, keys.range_end(prefix), start_revision=revision)
                for batch in stream.batches():
                    now = time.time()
                    for event in batch:
                        revision = event.kv.mod_revision + 1
                        if not event.deleted:
                            created[event.kv.key] = event.kv.create_revision
                        elif event.kv.key in created:
                            self._note(keys.lock_name(event.kv.key), created.pop(event.kv.key), now)
            except (BackendError, StreamBroken):
                self._stop.wait(0.2)

    def _note(self, name: str, token: int, at: float) -> None:
        with self._lock:
            if (name, token) not in self.deleted or at < self.deleted[(name, token)]:
                self.deleted[(name, token)] = at

    def deletions(self) -> list[history.Deletion]:
        with self._lock:
            return [history.Deletion(name, token, at) for (name, token), at in self.deleted.items()]

    def close(self) -> None:
        self._stop.set()
        for c in self._clients:
            c.close()


@contextmanager
def rig(settings: Settings, workdir: Path) -> Iterator[Rig]:
    """The hosts, the etcd cluster on them and a MariaDB database; all torn down on exit."""
    import pymysql

    network = TestNetwork([*MEMBERS, *CLIENT_HOSTS]).create()
    database = f"lockd_nemesis_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(unix_socket=MYSQL_SOCKET, user="root", autocommit=True)
    try:
        admin.cursor().execute(f"CREATE DATABASE {database}")
        placements = [(network.hosts[m].ip, network.hosts[m].argv()) for m in MEMBERS]
        cluster = EtcdCluster(workdir / "etcd", placements=placements)
        try:
            cluster.start()
            yield Rig(
                settings,
                network,
                cluster,
                workdir,
                f"mysql+pymysql://root@localhost/{database}?unix_socket={MYSQL_SOCKET}",
            )
        finally:
            cluster.stop()
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database}")
        admin.close()
        network.close()


def start_clients(r: Rig) -> None:
    s = r.settings
    members = r.cluster.members
    for i, host in enumerate(CLIENT_HOSTS):
        own = members[i % len(members)]
        others = ",".join(m.endpoint for m in members if m is not own)
        systems = [("lockd", k) for k in range(s.lockd_procs)] + [("stock", 0)]
        r.clients[host] = []
        for system, k in systems:
            if system == "lockd":
                url = (
                    f"lockd+etcd3+http://{own.endpoint}?endpoints={others}&lease_ttl={s.lease_ttl:g}"
                    f"&timeout={s.request_timeout:g}"
                )
            else:
                url = f"etcd3+http://{own.ip}:{own.client_port}?timeout={s.lease_ttl:g}"
            spec = {
                "system": system,
                "url": url,
                "reader_url": f"lockd+etcd3+http://{own.endpoint}?timeout={s.request_timeout:g}",
                "names": [f"{system}-vol-{n}" for n in range(s.names)],
                "threads": s.threads,
                "sql_url": r.sql_url,
                "history": str(r.workdir / f"{host}-{system}-{k}.jsonl"),
                "acquire_timeout": s.acquire_timeout,
                "process": f"{host}-{system}-{k}",
                "seed": s.seed,
            }
            proc = ChildProcess("-m", "tests.nemesis_client", json.dumps(spec), launcher=r.network.hosts[host].argv())
            r.clients[host].append((system, proc))
    for procs in r.clients.values():
        for _, proc in procs:
            proc.wait_event("started", timeout=60)


def inject(r: Rig, kind: str, rng: random.Random) -> tuple[str, Callable[[], None]]:
    """Apply one fault; returns its target and the heal."""
    net, cluster = r.network, r.cluster
    host = rng.choice(CLIENT_HOSTS)
    if kind in ("isolate-client", "isolate-twice", "freeze-host"):
        await_stock_hold(r, host)
    if kind == "isolate-client":
        net.isolate(host)
        return host, lambda: net.heal(host)
    if kind == "isolate-twice":  # the first cut and the short heal here; the second is held by the schedule
        net.isolate(host)
        time.sleep(r.settings.acquire_timeout + rng.uniform(0.5, 1.5))
        net.heal(host)
        time.sleep(TWICE_GAP)
        net.isolate(host)
        return host, lambda: net.heal(host)
    if kind == "cut-own-member":
        own = MEMBERS[CLIENT_HOSTS.index(host) % len(MEMBERS)]
        net.cut(host, [own])
        return f"{host}/{own}", lambda: net.heal(host)
    if kind == "minority-leader":
        leader = cluster.wait_for_leader(timeout=30)
        name = MEMBERS[cluster.members.index(leader)]
        net.cut(name, [m for m in MEMBERS if m != name])
        return name, lambda: net.heal(name)
    if kind == "lossy":
        direction = rng.choice(("both", "out", "in"))
        net.lossy(host, 0.3, direction)
        return f"{host} {direction}", lambda: net.heal(host)
    if kind == "slow":
        direction = rng.choice(("both", "out"))
        net.slow(host, 0.2, direction)
        return f"{host} {direction}", lambda: net.heal(host)
    if kind == "kill-member":
        member = rng.choice(cluster.members)
        cluster.kill(member)
        return member.name, lambda: member.start(wait=False)
    if kind == "freeze-host":
        procs = [p for _, p in r.clients[host]]
        for p in procs:
            p.pause()

        def thaw() -> None:
            for p in procs:
                p.resume()

        return host, thaw
    raise ValueError(kind)


def stock_holding(r: Rig, host: str) -> bool:
    """Whether a control (stock tooz) client on ``host`` holds a lock now: its last step was an acquire that
    succeeded, or a write under it, in the tail of its history."""
    try:
        with (r.workdir / f"{host}-stock-0.jsonl").open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().decode(errors="replace").splitlines()[1:]
    except OSError:
        return False
    holding: dict[str, bool] = {}
    for line in tail:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line still being written
        op = record.get("op")
        if op == "acquire":
            holding[record["client"]] = bool(record.get("ok"))
        elif op == "release":
            holding[record["client"]] = False
    return any(holding.values())


def await_stock_hold(r: Rig, host: str, patience: float = 3.0) -> None:
    """Wait until a control client on ``host`` holds a lock (or ``patience`` runs out): see the module doc."""
    until = time.monotonic() + patience
    while time.monotonic() < until and not stock_holding(r, host):
        time.sleep(0.005)


def run_schedule(r: Rig, rng: random.Random) -> list[Fault]:
    s = r.settings
    faults: list[Fault] = []
    end = time.monotonic() + s.duration
    time.sleep(rng.uniform(1.0, 2.0))  # warm up: every client is looping before the first fault
    first = rng.sample(FAULTS, len(FAULTS))  # every kind once, in a seeded order, whatever the machine's speed
    while time.monotonic() < end:
        kind = first.pop(0) if first else rng.choice(FAULTS)
        hold = rng.uniform(1.0, 2.5 * s.lease_ttl)
        if kind == "isolate-twice":
            hold = s.acquire_timeout + rng.uniform(0.5, 1.5)  # its second cut, too, outlasts the acquire wait
        start = time.time()
        target, heal = inject(r, kind, rng)
        time.sleep(min(hold, max(0.0, end - time.monotonic())))
        heal()
        faults.append(Fault(kind, target, start, time.time()))
        time.sleep(rng.uniform(0.5, 2.0))
    r.network.heal()
    r.cluster.heal(timeout=60)
    return faults


def stop_clients(r: Rig) -> list[str]:
    """Close every client's stdin and collect what it reports; a client that does not end is named, its threads'
    stacks dumped next to its history (``<label>.jsonl.stacks``), and killed."""
    problems = []
    for procs in r.clients.values():
        for _, proc in procs:
            proc.finish()
    for host, procs in r.clients.items():
        for k, (system, proc) in enumerate(procs):
            label = f"{host}-{system}-{sum(1 for s, _ in procs[:k] if s == system)}"  # as in its history's name
            timeout = r.settings.stop_timeout
            if system == "stock" and r.settings.control_stop_timeout is not None:
                timeout = r.settings.control_stop_timeout
            try:
                done = proc.wait_event("done", timeout=timeout)
                problems += [f"{c}: a thread did not stop" for c in done["stuck"]]
            except AssertionError as exc:
                problems.append(f"{label}: {str(exc).splitlines()[0]} (its stacks: {label}.jsonl.stacks)")
                proc.proc.send_signal(signal.SIGUSR1)  # nemesis_client dumps its threads' stacks there
                time.sleep(0.5)
            proc.stop()
    return problems


def load_records(workdir: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(workdir.glob("c*-*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def judge(
    records: list[dict[str, Any]],
    deletions: list[history.Deletion],
    faults: list[Fault],
    healed_at: float,
    settings: Settings,
    system: str,
) -> dict[str, Any]:
    """Findings and figures of one system (tests/history.py does the checking)."""
    mine = [r for r in records if f"-{system}-" in r["process"]]
    holds, released = history.nemesis_holds(mine)
    writes = [
        history.Write(r["client"], r["name"], r["store"], r["start"], r["end"], r.get("token"), bool(r["ok"]))
        for r in mine
        if r["op"] == "write"
    ]
    findings: list[history.Finding] = [history.Finding(v.kind, str(v)) for v in history.check(holds)]
    findings += history.stale_writes(writes)
    late, server_leads = history.late_losses(holds, released, deletions)
    findings += late
    findings += hangs(mine, faults, settings)
    findings += no_recovery(mine, healed_at)
    acquired = [r for r in mine if r["op"] == "acquire" and r.get("ok")]
    lost = [r for r in mine if r["op"] == "lost"]
    late_notices, notice_leads, frozen_notices = notices(lost, acquired, faults)
    findings += late_notices
    return {
        "findings": [str(f) for f in findings],
        "violations": Counter(f.kind for f in findings),
        "acquisitions": len(acquired),
        "acquire_errors": sum(1 for r in mine if r["op"] == "acquire" and r.get("error")),
        "writes": Counter(
            f"{r['store']} {'accepted' if r['ok'] else r.get('reason') or 'error'}" for r in mine if r["op"] == "write"
        ),
        "lost_notices": len(lost),
        "notice_lead_before_successor_s": spread(notice_leads),
        "notices_after_a_freeze": frozen_notices,
        "lead_before_server_s": spread(server_leads),
        "lead_before_successor_s": spread(history.successor_leads(holds, released)),
        "per_fault": per_fault(acquired, faults),
    }


def notices(
    lost: list[dict[str, Any]], acquired: list[dict[str, Any]], faults: list[Fault]
) -> tuple[list[history.Finding], list[float], int]:
    """When each "lost" notice (the on_lost callback) came, against the next holder's acquisition.

    A notice after the successor took the lock is a finding, unless the holder's host was frozen in between:
    a stopped process hears nothing until it runs again (its lock already answered "not held" from the
    deadline on, which the holds check). Returns the findings, the leads of the others, and how many notices
    came out of a freeze."""
    findings, leads, frozen = [], [], 0
    for notice in lost:
        later = [a for a in acquired if a["name"] == notice["name"] and (a.get("token") or 0) > notice["token"]]
        if not later:
            continue
        successor = min(later, key=lambda a: a["token"])
        host = notice["process"].split("-", 1)[0]
        if any(
            f.kind == "freeze-host" and f.target == host and f.start < notice["at"] and f.end > successor["end"] - 30
            for f in faults
        ):
            frozen += 1
            continue
        leads.append(successor["end"] - notice["at"])
        if leads[-1] < 0:
            findings.append(
                history.Finding(
                    "late-notice",
                    f"{notice['client']} heard of its lost lock {notice['name']} (token {notice['token']}) "
                    f"{-leads[-1]:.3f}s after {successor['client']} took it",
                )
            )
    return findings, leads, frozen


def hangs(records: list[dict[str, Any]], faults: list[Fault], s: Settings) -> list[history.Finding]:
    """Calls that ran past their bound. A call may wait (an acquire's ``blocking``) and then make at most two
    requests whose answers it needs (the one in flight at the deadline and the queue cleanup; a write's read
    and its compare-and-set or ownership check; a release and, if repeated, its audit read), and each request
    may try every member for the client's per-request timeout: bound = wait + 2 x members x timeout + 1 s.
    Calls that spanned a freeze of their own host are not counted (the process was stopped)."""
    frozen = [(f.target, f.start, f.end) for f in faults if f.kind == "freeze-host"]
    requests = 2 * s.request_timeout * len(MEMBERS) + 1.0
    findings = []
    for r in records:
        if r["op"] not in ("acquire", "release", "write"):
            continue
        bound = requests + (s.acquire_timeout if r["op"] == "acquire" else 0.0)
        took = r["end"] - r["start"]
        host = r["process"].split("-", 1)[0]
        if took > bound and not any(h == host and a < r["end"] and r["start"] < b for h, a, b in frozen):
            findings.append(
                history.Finding("hang", f"{r['client']} {r['op']} {r['name']} took {took:.1f}s > {bound:.1f}s")
            )
    return findings


def no_recovery(records: list[dict[str, Any]], healed_at: float) -> list[history.Finding]:
    """Clients that never completed an acquire and a clean release after the last heal."""
    clients = {r["client"] for r in records}
    worked = {
        r["client"] for r in records if r["op"] == "release" and r["start"] > healed_at and r.get("error") is None
    }
    return [history.Finding("no-recovery", f"{c} did no clean cycle after the heal") for c in sorted(clients - worked)]


def per_fault(acquired: list[dict[str, Any]], faults: list[Fault]) -> dict[str, dict[str, float]]:
    """Per fault kind: acquisitions per second while it was on, and the longest time without any acquisition."""
    times = sorted(r["end"] for r in acquired)
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"seconds": 0.0, "acquisitions": 0, "longest_gap_s": 0.0})
    for f in faults:
        inside = [t for t in times if f.start <= t <= f.end]
        edges = [f.start, *inside, f.end]
        row = out[f.kind]
        row["seconds"] += f.end - f.start
        row["acquisitions"] += len(inside)
        row["longest_gap_s"] = max(row["longest_gap_s"], max(b - a for a, b in zip(edges, edges[1:], strict=False)))
    for row in out.values():
        row["per_second"] = row["acquisitions"] / row["seconds"] if row["seconds"] else 0.0
    return dict(out)


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    values = sorted(values)
    return {
        "n": len(values),
        "min": values[0],
        "p50": statistics.median(values),
        "p99": values[min(len(values) - 1, int(len(values) * 0.99))],
        "max": values[-1],
    }


def run(settings: Settings, workdir: Path, schedule: Callable[[Rig], list[Fault]] | None = None) -> dict[str, Any]:
    """One nemesis run; returns the report (see judge).

    ``schedule`` replaces the seeded random faults: it runs while the clients do, returns what it did as
    faults, and must leave the cluster healthy (tests/planned.py passes its operator procedures here)."""
    rng = random.Random(settings.seed)
    with rig(settings, workdir) as r:
        observer = Observer([m.endpoint for m in r.cluster.members])
        # What `lockd serve` would report meanwhile: its view of the locks, with its deadlock detector. The clients
        # hold one lock at a time, so any deadlock it reports is a false one (issue 26's floor: none).
        view_client = EtcdClient(parse_backend_url(r.cluster.url(r.cluster.members[0], timeout=1)))
        view = LockView(view_client)
        view.start()
        try:
            start_clients(r)
            started = time.time()
            faults = schedule(r) if schedule is not None else run_schedule(r, rng)
            healed_at = time.time()
            time.sleep(settings.recover)
            problems = stop_clients(r)
        finally:
            for procs in r.clients.values():
                for _, proc in procs:
                    proc.stop()
            observer.close()
            view.stop()
            view_client.close()
        records = load_records(workdir)
        deletions = observer.deletions()
        deadlocks = [{"id": d.id, "locks": d.locks, "open": True} for d in view.deadlocks.current()]
        deadlocks += [{"id": d.id, "locks": list(d.locks), "how": d.how} for d in view.deadlocks.resolved()]
    return {
        "settings": asdict(settings),
        "seconds": healed_at - started,
        "faults": Counter(f.kind for f in faults),
        "fault_log": [asdict(f) for f in faults],
        "stop_problems": problems,
        "lockd": judge(records, deletions, faults, healed_at, settings, "lockd"),
        "stock": judge(records, deletions, faults, healed_at, settings, "stock"),
        "deadlocks_reported": deadlocks,
    }


def summary(report: dict[str, Any]) -> str:
    lines = [f"nemesis seed {report['settings']['seed']}: {report['seconds']:.0f} s, faults {dict(report['faults'])}"]
    for system in ("lockd", "stock"):
        j = report[system]
        lines.append(
            f"{system}: {j['acquisitions']} acquisitions, writes {dict(j['writes'])}, "
            f"violations {dict(j['violations']) or 'none'}, lost notices {j['lost_notices']}"
        )
        lines.append(f"  lead before server deletion: {j['lead_before_server_s']}")
        lines.append(f"  lead before successor: {j['lead_before_successor_s']}")
        lines.append(
            f"  notice lead before successor: {j['notice_lead_before_successor_s']} "
            f"(+{j['notices_after_a_freeze']} after a freeze)"
        )
        for kind, row in sorted(j["per_fault"].items()):
            lines.append(
                f"  {kind:16} {row['seconds']:6.1f} s  {row['per_second']:6.1f} acq/s  "
                f"longest gap {row['longest_gap_s']:.2f} s"
            )
        lines += [f"  ! {f}" for f in j["findings"][:10]]
    lines.append(f"deadlocks reported by the lock view: {len(report['deadlocks_reported'])}")
    lines += [f"stop: {p}" for p in report["stop_problems"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("--workdir", type=Path, help="keep the histories here (default: a temporary directory)")
    args = parser.parse_args(argv)
    settings = Settings(seed=args.seed, duration=args.duration)
    with tempfile.TemporaryDirectory(prefix="nemesis-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(settings, workdir)
    print(summary(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 1 if report["lockd"]["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
