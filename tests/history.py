"""A Jepsen-style history checker for lock runs: did two processes ever believe they held one name at once?

A history is a list of operations ``(process, op, start, end, token)``: ``acquire`` runs from when it was called
to when it returned (``ok`` says whether it took the lock); ``release`` from when it was called to when it
returned. Clocks are ``time.time()`` of processes on one host, so they are comparable.

From each process's acquire/release pair the checker derives a *hold*: the span in which that process believed
it held the lock, from the acquire's return to the release's call. If the client knows its lock stopped being
valid earlier (lockd's session deadline, recorded as ``valid_until``), the hold ends there: past that point the
client itself answers "not held". Stock tooz has no such bound, so its holds end only at release.

Checks, per lock name:
  * no two holds overlap (mutual exclusion as the processes experienced it);
  * ordered by start, fencing tokens strictly increase (a later holder never carries an older token).
Workers may also write holds directly (one JSON line with ``start``/``end``), as tests/worker.py does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Op:
    process: str
    op: str  # "acquire" | "release"
    start: float
    end: float
    token: int | None = None
    name: str = ""
    ok: bool = True
    valid_until: float | None = None  # release only: when the client's own validity deadline ran out


@dataclass(frozen=True)
class Hold:
    process: str
    name: str
    start: float
    end: float
    token: int | None


@dataclass(frozen=True)
class Violation:
    kind: str  # "overlap" | "token-order"
    first: Hold
    second: Hold

    def __str__(self) -> str:
        a, b = self.first, self.second
        if self.kind == "overlap":
            both = min(a.end, b.end) - b.start
            return (
                f"{a.name}: {a.process} (token {a.token}) held [{a.start:.3f}, {a.end:.3f}] and {b.process} "
                f"(token {b.token}) held [{b.start:.3f}, {b.end:.3f}]: both for {both:.3f}s"
            )
        return f"{a.name}: {b.process} started later than {a.process} with token {b.token} <= {a.token}"


def holds_from_ops(ops: Iterable[Op]) -> list[Hold]:
    """Pair each successful acquire with the same process's next release of that name.

    An acquire without a release (the process died or the run ended) holds until the end of the history.
    """
    ops = sorted(ops, key=lambda o: o.start)
    horizon = max((o.end for o in ops), default=0.0)
    open_: dict[tuple[str, str], Op] = {}
    holds: list[Hold] = []
    for o in ops:
        key = (o.process, o.name)
        if o.op == "acquire" and o.ok:
            open_[key] = o
        elif o.op == "release" and key in open_:
            acq = open_.pop(key)
            end = o.start if o.valid_until is None else min(o.start, o.valid_until)
            holds.append(Hold(o.process, o.name, acq.end, end, acq.token))
    holds.extend(Hold(a.process, a.name, a.end, horizon, a.token) for a in open_.values())
    return holds


def check(holds: Iterable[Hold]) -> list[Violation]:
    """Every overlap between two processes' holds of one name, and every token that did not grow with time."""
    by_name: dict[str, list[Hold]] = defaultdict(list)
    for h in holds:
        by_name[h.name].append(h)
    violations: list[Violation] = []
    for group in by_name.values():
        group.sort(key=lambda h: (h.start, h.end))
        latest: Hold | None = None  # the hold ending last among those seen so far
        for h in group:
            if latest is not None and h.start < latest.end and h.process != latest.process:
                violations.append(Violation("overlap", latest, h))
            if latest is None or h.end > latest.end:
                latest = h
        tokened = [h for h in group if h.token is not None]
        for a, b in zip(tokened, tokened[1:], strict=False):
            if b.token is not None and a.token is not None and b.token <= a.token:
                violations.append(Violation("token-order", a, b))
    return violations


def longest_gap(holds: Iterable[Hold]) -> float:
    """The longest time between one hold's end and the next hold's start (per name): how long nobody held."""
    by_name: dict[str, list[Hold]] = defaultdict(list)
    for h in holds:
        by_name[h.name].append(h)
    gap = 0.0
    for group in by_name.values():
        group.sort(key=lambda h: h.start)
        end = group[0].end
        for h in group[1:]:
            gap = max(gap, h.start - end)
            end = max(end, h.end)
    return gap


def load_holds(path: Path, name: str = "") -> list[Hold]:
    """Holds written one JSON object per line by tests/worker.py (``member``, ``start``, ``end``, ``token``)."""
    holds = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            end = r["end"] if r.get("valid_until") is None else min(r["end"], r["valid_until"])
            holds.append(Hold(r["member"], r.get("name", name), r["start"], end, r.get("token")))
    return holds


# -- nemesis histories (tests/nemesis.py): holds, writes, losses and hangs from the clients' own records ------------


@dataclass(frozen=True)
class Write:
    client: str
    name: str
    store: str
    start: float
    end: float
    token: int | None
    ok: bool


@dataclass(frozen=True)
class Deletion:
    """The lock key created at revision ``token`` was deleted; ``at`` is when the observer heard of it (after
    the server did it, so a check against it is lenient by the observer's lag, never strict)."""

    name: str
    token: int
    at: float


@dataclass(frozen=True)
class Finding:
    kind: str  # "overlap" | "token-order" | "stale-write" | "late-loss" | "hang" | "no-recovery"
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def nemesis_holds(records: Iterable[dict]) -> tuple[list[Hold], dict[tuple[str, str, int | None], float]]:
    """Holds of every client (a client is one thread), and for each hold the moment its release was called.

    A hold runs from the acquire's return to the release's call, or to ``valid_until`` when the client's own
    lease deadline ran out first: past that moment the client itself answers "not held". Returns the holds and
    ``released[(client, name, token)]`` = when the release was called (absent: never released).
    """
    ops = []
    for r in records:
        if r["op"] in ("acquire", "release") and not (r["op"] == "acquire" and r.get("error")):
            ops.append(
                Op(
                    r["client"],
                    r["op"],
                    r["start"],
                    r["end"],
                    r.get("token"),
                    r["name"],
                    bool(r.get("ok")),
                    r.get("valid_until"),
                )
            )
    released = {(r["client"], r["name"], r.get("token")): r["start"] for r in records if r["op"] == "release"}
    return holds_from_ops(ops), released


def stale_writes(writes: Iterable[Write]) -> list[Finding]:
    """Accepted writes whose token is lower than one already accepted on that resource before they were sent."""
    findings = []
    by_resource: dict[tuple[str, str], list[Write]] = defaultdict(list)
    for w in writes:
        if w.ok and w.token is not None:
            by_resource[(w.store, w.name)].append(w)
    for (store, name), group in by_resource.items():
        by_end = sorted(group, key=lambda w: w.end)
        done, highest = 0, None
        for w in sorted(group, key=lambda w: w.start):
            while done < len(by_end) and by_end[done].end < w.start:
                if highest is None or by_end[done].token > highest.token:
                    highest = by_end[done]
                done += 1
            if highest is not None and w.token < highest.token:
                findings.append(
                    Finding(
                        "stale-write",
                        f"{store} {name}: {w.client} wrote with token {w.token} at {w.start:.3f}, "
                        f"after {highest.client}'s write with token {highest.token} acknowledged at {highest.end:.3f}",
                    )
                )
    return findings


def late_losses(
    holds: Iterable[Hold], released: dict[tuple[str, str, int | None], float], deletions: Iterable[Deletion]
) -> tuple[list[Finding], list[float]]:
    """Holds whose key the server deleted (lease expired) while the client still believed it held the lock.

    Returns the findings and, for every hold the server ended (not the client's own release), the lead time:
    how long before the deletion the client stopped believing (positive is right).
    """
    gone = {(d.name, d.token): d.at for d in deletions}
    findings, leads = [], []
    for h in holds:
        at = gone.get((h.name, h.token)) if h.token is not None else None
        if at is None or released.get((h.process, h.name, h.token), float("inf")) <= at:
            continue  # still held at the end, or freed by the client's own release
        leads.append(at - h.end)
        if h.end > at:
            findings.append(
                Finding(
                    "late-loss",
                    f"{h.name}: {h.process} (token {h.token}) believed it held until {h.end:.3f}, "
                    f"but the server deleted its key at {at:.3f}",
                )
            )
    return findings, leads


def successor_leads(holds: Iterable[Hold], released: dict[tuple[str, str, int | None], float]) -> list[float]:
    """For each hold that ended by loss (not release), the time from its end to the next holder's start."""
    by_name: dict[str, list[Hold]] = defaultdict(list)
    for h in holds:
        by_name[h.name].append(h)
    leads = []
    for group in by_name.values():
        group.sort(key=lambda h: h.start)
        for a, b in zip(group, group[1:], strict=False):
            if a.end < released.get((a.process, a.name, a.token), float("inf")):
                leads.append(b.start - a.end)
    return leads
