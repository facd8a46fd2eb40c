"""The bench's answer: a table with ratios to stock tooz, the floors of issue 2 as PASS/FAIL, and JSON.

The floors are information for the operator and the team (the bench exits 0 either way); each is checked
against stock tooz measured in the same run on the same etcd, never against a constant from another machine.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from lockd.bench.result import ScenarioResult
from lockd.bench.targets import FLOOR, MUTEX, TOOZ

# Per scenario: (metric, header, format, show ratio to stock tooz). Scenarios not listed print every number.
COLUMNS: dict[str, list[tuple[str, str, str, bool]]] = {
    "uncontended": [
        ("p50_ms", "p50 ms", "{:.3f}", True),
        ("p99_ms", "p99 ms", "{:.3f}", True),
        ("ops_per_s", "ops/s", "{:.0f}", True),
    ],
    "contention": [
        ("throughput_per_s", "acq/s", "{:.1f}", True),
        ("handoff_p50_ms", "handoff p50 ms", "{:.2f}", True),
        ("handoff_p50_commits", "p50 commits", "{:.2f}", False),
        ("handoff_p99_ms", "handoff p99 ms", "{:.2f}", True),
        ("handoff_p99_commits", "p99 commits", "{:.2f}", False),
        ("max_wait_ms", "max wait ms", "{:.0f}", True),
        ("jain", "Jain", "{:.3f}", False),
        ("counter_exact", "counter", "{}", False),
        ("leases_live", "leases", "{}", False),
        ("etcd_cpu_per_1000", "etcd CPU s/1000 acq", "{:.2f}", True),
    ],
    "fleet": [
        ("threads", "threads", "{}", False),
        ("acquisitions", "acquisitions", "{}", False),
        ("acq_per_s", "acq/s", "{:.0f}", True),
        ("cycle_p50_ms", "cycle p50 ms", "{:.2f}", True),
        ("cycle_p99_ms", "cycle p99 ms", "{:.2f}", True),
        ("jain", "Jain", "{:.3f}", False),
        ("etcd_cpu_per_1000", "etcd CPU s/1000 acq", "{:.2f}", True),
        ("client_cpu_per_1000", "client CPU s/1000 acq", "{:.2f}", True),
    ],
    "leases": [
        ("cycles", "cycles", "{}", False),
        ("coordinators", "coordinators", "{}", False),
        ("leases_live", "leases live", "{}", False),
        ("leases_after_stop", "after stop", "{}", False),
    ],
    "status": [
        ("transitions_per_s", "transitions/s", "{:.0f}", False),
        ("fresh_per_s", "fresh ids/s", "{:.0f}", False),
        ("race_winners_min", "race winners min", "{}", False),
        ("race_winners_max", "max", "{}", False),
        ("loser_calls_mean", "etcd calls/loser", "{:.2f}", False),
        ("loser_call_ms_p50", "loser p50 ms", "{:.2f}", False),
        ("transition_p50_ms", "fenced p50 ms", "{:.3f}", False),
        ("vs_one_txn", "vs one-txn", "{:.2f}x", False),
    ],
    "waiters": [
        ("conns_waiting", "conns", "{}", True),
        ("fds_waiting", "fds", "{}", False),
        ("rss_waiting_mb", "RSS MB", "{:.0f}", True),
        ("served_of", "served", "{}", False),
        ("served_s", "served s", "{:.2f}", True),
        ("handoff_p50_ms", "handoff p50 ms", "{:.1f}", True),
        ("handoff_p99_ms", "handoff p99 ms", "{:.1f}", True),
        ("errors", "errors", "{}", False),
        ("held_locks", "held locks", "{}", False),
    ],
    "admin-scale": [
        ("startup_s", "start-up s", "{:.1f}", False),
        ("rss_ready_mb", "RSS ready MB", "{:.0f}", False),
        ("rss_peak_mb", "RSS peak MB", "{:.0f}", False),
        ("prefix_p50_ms", "prefix p50 ms", "{:.1f}", False),
        ("page_p50_ms", "page p50 ms", "{:.1f}", False),
        ("list_p50_ms", "list p50 ms", "{:.0f}", False),
        ("list_listed", "listed", "{}", False),
        ("list_mb", "list MB", "{:.1f}", False),
        ("idle_cpu_pct", "idle CPU %", "{:.1f}", False),
    ],
    "crash": [
        ("sigkill_s", "SIGKILL holder s", "{:.3f}", True),
        ("clean_stop_s", "clean stop s", "{:.3f}", True),
        ("lease_ttl_s", "TTL s", "{:g}", False),
    ],
}


@dataclasses.dataclass
class Floor:
    """One floor line: ``ok`` is None when the scenario that checks it did not run; an ``info`` line only
    reports a comparison (its verdict is ``info``, whatever ``ok`` says)."""

    name: str
    required: str
    measured: str
    ok: bool | None
    info: bool = False

    @property
    def verdict(self) -> str:
        if self.info:
            return "info"
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.ok]


@dataclasses.dataclass
class Report:
    machine: dict[str, Any]
    config: dict[str, Any]
    scenarios: list[ScenarioResult] = dataclasses.field(default_factory=list)
    floors: list[Floor] = dataclasses.field(default_factory=list)

    def scenario(self, name: str) -> ScenarioResult | None:
        return next((s for s in self.scenarios if s.name == name and not s.skipped), None)

    # -- floors -------------------------------------------------------------------------------------------

    def check_floors(self) -> None:
        """Fill ``floors`` from the scenarios that ran (issue 2's floors, lockd against stock tooz)."""
        self.floors = []
        un = self.scenario("uncontended")
        lockd, tooz = _pair(un)
        self.floors.append(
            _ratio_floor("uncontended p50 <= 0.5 x stock tooz", lockd, tooz, "p50_ms", "<=", 0.5, "{:.3f} ms")
        )
        floor = un.metrics.get(FLOOR) if un is not None else None
        self.floors.append(
            _ratio_floor("uncontended p50 <= 1.1 x etcd two-txn floor (issue 25)", lockd, floor, "p50_ms", "<=",
                         1.1, "{:.3f} ms", "two-txn floor")
        )  # fmt: skip
        co = self.scenario("contention")
        lockd, tooz = _pair(co)
        self.floors.append(
            _ratio_floor("contention throughput >= 1.5 x stock tooz", lockd, tooz, "throughput_per_s", ">=", 1.5,
                         "{:.1f}/s")
        )  # fmt: skip
        self.floors.append(_abs_floor("contention Jain fairness >= 0.9", lockd, "jain", ">=", 0.9, "{:.3f}"))
        self.floors.append(_abs_floor("contention handoff p99 <= 50 ms", lockd, "handoff_p99_ms", "<=", 50, "{:.2f}"))
        if co is not None and "commit" in co.details:
            self.floors.extend(_commit_floors(co, lockd))
        exact = None if lockd is None else bool(lockd.get("counter_exact"))
        measured = "-" if lockd is None else f"{lockd['counter']} of {lockd['counter_expected']}"
        self.floors.append(Floor("contention counter exact", "every increment kept", measured, exact))
        if lockd is not None and "leases_live" in lockd:
            processes = co.params["processes"] if co else 0
            self.floors.append(
                Floor(
                    "contention leases <= one per live coordinator",
                    f"<= {processes}",
                    str(lockd["leases_live"]),
                    lockd["leases_live"] <= processes,
                )
            )
        fd = self.scenario("waiters/fd-floor")
        lockd, _ = _pair(fd)
        if lockd is not None:
            from lockd.bench.scenarios.waiters import FLOOR_MAX_CONNECTIONS

            ok = (
                "crashed" not in lockd
                and bool(lockd.get("all_served"))
                and not lockd.get("lock_lost")
                and lockd.get("conns_waiting", FLOOR_MAX_CONNECTIONS + 1) <= FLOOR_MAX_CONNECTIONS
            )
            self.floors.append(
                Floor(
                    f"{fd.params['waiters']:,} waiting threads at fd limit {fd.params['fd_limit']} (issue 14)",
                    f"all served, no lock lost, <= {FLOOR_MAX_CONNECTIONS} conns",
                    f"served {lockd.get('served_of', '-')}, held locks {lockd.get('held_locks', '-')}, "
                    f"{lockd.get('conns_waiting', '-')} conns",
                    ok,
                )
            )
        ad = self.scenario("admin-scale")
        if ad is not None and "lockd" in ad.metrics:
            from lockd.bench.scenarios.admin_scale import FLOOR_LIST_P50_S, FLOOR_RSS_MB

            view = ad.metrics["lockd"]
            locks = f"{ad.params['locks']:,} locks"
            list_s = view["list_p50_ms"] / 1000.0
            self.floors.append(
                Floor(f"{locks}: list p50 (issue 14)", f"<= {FLOOR_LIST_P50_S:g} s", f"{list_s:.2f} s",
                      list_s <= FLOOR_LIST_P50_S)
            )  # fmt: skip
            rss = max(view["rss_ready_mb"], view["rss_peak_mb"], view["rss_idle_mb"])
            self.floors.append(
                Floor(f"{locks}: lockd serve RSS (issue 14)", f"<= {FLOOR_RSS_MB:g} MB", f"{rss:.0f} MB",
                      rss <= FLOOR_RSS_MB)
            )  # fmt: skip
        st = self.scenario("status")
        if st is not None and "lockd-status" in st.metrics:
            store = st.metrics["lockd-status"]
            rate = min(store["transitions_per_s"], store["fresh_per_s"])
            self.floors.append(Floor("status transitions >= 500/s", ">= 500/s", f"{rate:.0f}/s", rate >= 500))
            one = store["race_winners_min"] == store["race_winners_max"] == 1
            winners = f"{store['race_winners_min']}..{store['race_winners_max']} per round"
            self.floors.append(Floor("status race: exactly one winner", "1 per round", winners, one))
            from lockd.bench.scenarios.status import ONE_TXN
            from lockd.bench.status_floor import FLOOR_RATIO

            self.floors.append(
                _ratio_floor("status fenced transition p50 <= 1.1 x one-txn floor (issue 25)", store,
                             st.metrics.get(ONE_TXN), "transition_p50_ms", "<=", FLOOR_RATIO, "{:.3f} ms",
                             "one-txn floor")
            )  # fmt: skip
        fl = self.scenario("fleet")
        lockd, _ = _pair(fl)
        if fl is not None:
            from lockd.bench.scenarios.fleet import FLOOR_RATIO as FLEET_RATIO

            size = f"{fl.params['processes']} processes x {fl.params['threads']} threads"
            self.floors.append(
                _ratio_floor(f"fleet acq/s >= 0.8 x raw two-txn floor, {size} (issue 25)", lockd,
                             fl.metrics.get(FLOOR), "acq_per_s", ">=", FLEET_RATIO, "{:.0f}/s", "raw floor")
            )  # fmt: skip
        le = self.scenario("leases")
        lockd, _ = _pair(le)
        if lockd is None:
            self.floors.append(Floor("leases after 1,000 cycles <= one per coordinator", "<= 1", "-", None))
        else:
            self.floors.append(
                Floor(
                    f"leases after {lockd['cycles']:,} cycles <= one per coordinator",
                    f"<= {lockd['coordinators']}",
                    str(lockd["leases_live"]),
                    lockd["leases_live"] <= lockd["coordinators"],
                )
            )

    # -- output -------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only; a number that could not be measured (NaN) becomes null."""
        return _finite(
            {
                "machine": self.machine,
                "config": self.config,
                "scenarios": {s.name: s.to_json() for s in self.scenarios},
                "floors": [dataclasses.asdict(f) | {"verdict": f.verdict} for f in self.floors],
            }
        )

    def table(self) -> str:
        """The human-readable report: one table per scenario, then the floors."""
        m = self.machine
        lines = [f"lockd bench: {m['nproc']} CPUs, etcd {m['etcd_version']} ({m['etcd']}), Python {m['python']}"]
        for s in self.scenarios:
            lines.append("")
            lines.append(f"== {s.name}: {s.title}" + (" (skipped)" if s.skipped else ""))
            if not s.skipped:
                lines.extend(_scenario_table(s))
            lines.extend(f"   note: {note}" for note in s.notes)
        if self.floors:
            lines.append("")
            lines.append(
                "== floors (issues 2, 14 and 25, and status; against stock tooz or raw etcd measured in this run; "
                "information only)"
            )
            width = max(len(f.name) for f in self.floors)
            need = max(len(f.required) for f in self.floors)
            for f in self.floors:
                lines.append(f"{f.verdict:<5} {f.name:<{width}}  required {f.required:<{need}}  measured {f.measured}")
        return "\n".join(lines)


def _pair(s: ScenarioResult | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    if s is None:
        return None, None
    return s.metrics.get("lockd"), s.metrics.get(TOOZ)


def _compare(value: float, op: str, bound: float) -> bool:
    return value <= bound if op == "<=" else value >= bound


def _ratio_floor(
    name: str, lockd: Any, base: Any, key: str, op: str, factor: float, fmt: str, base_name: str = "tooz"
) -> Floor:
    """lockd's ``key`` over ``base``'s (stock tooz, or a raw etcd floor measured in the same run)."""
    required = f"{op} {factor:g} x {base_name}"
    if lockd is None or base is None or not base.get(key) or lockd.get(key) is None:
        return Floor(name, required, "-", None)
    ratio = lockd[key] / base[key]
    measured = f"{fmt.format(lockd[key])} vs {fmt.format(base[key])} = {ratio:.2f}x"
    return Floor(name, required, measured, _compare(ratio, op, factor))


def _commit_floors(co: ScenarioResult, lockd: dict[str, Any] | None) -> list[Floor]:
    """Issue 25's handoff floors in the run's commits, and lockd's handoff against etcd's own Mutex (information)."""
    from lockd.bench.scenarios.contention import HANDOFF_P50_COMMITS, HANDOFF_P99_COMMITS

    commit = co.details["commit"]["p50_ms"]
    floors = []
    for q, bound in (("p50", HANDOFF_P50_COMMITS), ("p99", HANDOFF_P99_COMMITS)):
        name, required = f"contention handoff {q} <= {bound:g} commits (issue 25)", f"<= {bound:g} commits"
        commits = None if lockd is None else lockd.get(f"handoff_{q}_commits")
        if commits is None or _nan(commits):
            floors.append(Floor(name, required, "-", None))
            continue
        measured = f"{lockd[f'handoff_{q}_ms']:.2f} ms / commit {commit:.3f} ms = {commits:.2f} commits"
        floors.append(Floor(name, required, measured, commits <= bound))
    mutex = co.metrics.get(MUTEX)
    name = "contention lockd handoff p50 vs etcd-mutex handoff p50"
    if lockd is None or mutex is None or not mutex.get("handoff_p50_ms") or _nan(lockd.get("handoff_p50_ms")):
        floors.append(Floor(name, "information", "-", None, info=True))
    else:
        ours, theirs = lockd["handoff_p50_ms"], mutex["handoff_p50_ms"]
        measured = (
            f"{ours:.2f} ms ({ours / commit:.2f} commits) vs {theirs:.2f} ms ({theirs / commit:.2f} commits) "
            f"= {ours / theirs:.2f}x"
        )
        floors.append(Floor(name, "information", measured, None, info=True))
    return floors


def _abs_floor(name: str, lockd: Any, key: str, op: str, bound: float, fmt: str) -> Floor:
    required = f"{op} {bound:g}"
    if lockd is None or key not in lockd or _nan(lockd[key]):
        return Floor(name, required, "-", None)
    return Floor(name, required, fmt.format(lockd[key]), _compare(lockd[key], op, bound))


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _fmt(fmt: str, value: Any) -> str:
    if value is None or _nan(value):
        return "-"
    if isinstance(value, bool):
        return "exact" if value else "LOST"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _scenario_table(s: ScenarioResult) -> list[str]:
    columns = COLUMNS.get(s.name) or COLUMNS.get(s.name.split("/")[0])
    if columns is None:
        keys = sorted({k for metrics in s.metrics.values() for k, v in metrics.items() if not isinstance(v, dict)})
        columns = [(k, k, "{:.4g}", False) for k in keys]
    tooz = s.metrics.get(TOOZ, {})
    header = ["target"]
    for _key, title, _, ratio in columns:
        header.append(title)
        if ratio and tooz:
            header.append("vs tooz")
    rows = [header]
    for target, metrics in s.metrics.items():
        row = [target]
        for key, _, fmt, ratio in columns:
            value = metrics.get(key)
            row.append(_fmt(fmt, value))
            if ratio and tooz:
                base = tooz.get(key)
                ok = isinstance(value, (int, float)) and isinstance(base, (int, float)) and base and not _nan(value)
                row.append(f"{value / base:.2f}x" if ok else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        out.append("   " + "  ".join(cells))
        if i == 0:
            out.append("   " + "  ".join("-" * w for w in widths))
    return out
