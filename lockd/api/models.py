"""The shapes the admin API answers with and accepts (fields fixed by INTERFACE.md).

Times are Unix seconds (floats); durations are seconds. No model has a field for the admin token, so it can
never be echoed back.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class HolderOut(BaseModel):
    """Who holds a lock; only lockd holders say (stock tooz writes 16 random bytes)."""

    member: str | None
    host: str | None
    pid: int | None


class LockOut(BaseModel):
    name: str
    holder: HolderOut | None = Field(description="null for a stock tooz holder")
    token: int = Field(description="fencing token: the etcd revision at which the lock key came to name this holder")
    acquired_at: float | None = Field(description="Unix time the lock was taken; null if unknown (stock tooz)")
    ttl_remaining: float | None = Field(description="seconds left on the holder's lease; null if unknown")
    waiters: int = Field(description="lockd waiters queued for this lock")


class LocksOut(BaseModel):
    locks: list[LockOut]
    next: str | None = Field(
        None, description="with ``limit``: pass as ``after`` for the next page; null when this page is the last"
    )


class MemberOut(BaseModel):
    member: str
    host: str | None
    pid: int | None
    locks_held: int
    last_seen: float | None = Field(description="Unix time the member last refreshed its session lease")


class MembersOut(BaseModel):
    members: list[MemberOut]


class StatusOut(BaseModel):
    kind: str
    id: str
    status: str
    revision: int


class TransitionIn(BaseModel):
    """A compare-and-set: move to ``target`` only if the status now is one of ``expected`` (null = absent)."""

    model_config = ConfigDict(extra="forbid")

    expected: list[str | None] = Field(min_length=1, max_length=64, examples=[["available", "error"]])
    target: str = Field(min_length=1, max_length=255, examples=["deleting"])


class ConflictOut(BaseModel):
    detail: str
    current: str | None = Field(description="the status found (null = absent)")


class HistoryOut(BaseModel):
    kind: str
    id: str
    history: list[dict[str, object]]


class BreakOut(BaseModel):
    action: str
    name: str
    token: int
    holder: HolderOut | None
    broken_at: float
    requested_by: str


class AuditOut(BaseModel):
    breaks: list[BreakOut]


class ErrorOut(BaseModel):
    detail: str


class OwnerOut(BaseModel):
    """One thread of one process: what waits and what holds in the wait-for graph; all null for a stock tooz
    holder (it names nobody)."""

    member: str | None
    host: str | None
    pid: int | None
    thread: int | None


class WaitEdgeOut(BaseModel):
    waiter: OwnerOut
    holder: OwnerOut
    lock: str
    since: float | None = Field(description="Unix time the waiter queued for the lock")


class WaitsOut(BaseModel):
    owners: list[OwnerOut] = Field(description="every owner that waits or is waited for")
    edges: list[WaitEdgeOut] = Field(description="one per lockd waiter of a held lock: waiter -> holder")


class DeadlockOut(BaseModel):
    id: str = Field(description="stable while the cycle lasts")
    since: float = Field(description="Unix time the cycle was first seen")
    locks: list[str] = Field(description="in cycle order: owners[i] waits for locks[i], held by owners[i + 1]")
    owners: list[OwnerOut]
    suggested_break: str = Field(description="the youngest hold in the cycle (highest token): `lockd break` it")


class ResolvedDeadlockOut(BaseModel):
    id: str
    since: float
    ended: float
    locks: list[str]
    how: str = Field(description="what opened the cycle")


class DeadlocksOut(BaseModel):
    deadlocks: list[DeadlockOut]
    resolved: list[ResolvedDeadlockOut] = Field(description="the last ones that ended, newest first")


class HoldOut(BaseModel):
    """One hold of one lock: who, which acquisition (token), how long it waited and held, how it ended."""

    name: str
    template: str = Field(description="the holder's template, else the name with UUIDs folded to {id}")
    owner: OwnerOut = Field(description="the holding thread; all null for a stock tooz holder")
    token: int
    started: float | None = Field(description="Unix time the hold began (null: unknown)")
    waited: float | None = Field(description="seconds from its queue entry's appearance to the start (null: unknown)")
    held: float | None = Field(
        description="seconds held (so far, for one in progress; null: unknown start, or an unobserved end)"
    )
    ended: float | None = Field(
        description="Unix time it ended (unobserved: the latest it can have been); null while held"
    )
    how: str = Field(
        description="released, lost (its lease ended), broken (lockd break), held (in progress), or unobserved "
        "(it ended while the sidecar's watch was broken: see ended_between)"
    )
    ended_between: tuple[float, float] | None = Field(
        None,
        description="unobserved ends only: [the sidecar's last word from etcd before its watch broke, its next "
        "full read of etcd], the Unix times the end lies between; null when the end was seen",
    )


class HoldsOut(BaseModel):
    holds: list[HoldOut] = Field(description="finished holds, newest first (one page)")
    held: list[HoldOut] = Field(description="holds in progress matching the filters (first page only)")
    next: str | None = Field(description="pass as ``cursor`` for the next, older page; null on the last")
    kept: int = Field(description="finished holds the history keeps now (all names)")


class TemplateOut(BaseModel):
    template: str
    acquisitions: int = Field(description="holds started since the sidecar started watching")
    wait_p50: float | None
    wait_p99: float | None
    hold_p50: float | None
    hold_p99: float | None
    waiters: int = Field(description="lockd waiters queued now")


class ProfileOut(BaseModel):
    templates: list[TemplateOut] = Field(description="busiest first: most waiters now, then most acquisitions")
    samples: int = Field(description="percentiles are over each template's last this many waits and holds")
