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
