"""Where a lockd handoff's time goes: each step from the holder's release() to the next waiter holding (issue 25).

A measurement, not a test. P processes contend on one name exactly as ``lockd bench --scenario contention`` runs
them (its worker: acquire, read-sleep-write a counter, release; spawned processes, a start barrier), with every
worker traced from the inside by wrapping a few functions before it connects (nothing in lockd is changed; the
wrappers cost less than this machine's noise: uncontended acquire+release p50 1.54-1.82 ms untraced, 1.54-1.79 ms
traced, nine alternating pairs of processes). All times are ``time.monotonic()``: CLOCK_MONOTONIC, one clock for
every process on the host, so one process's release can be set against the next one's wake-up.

What each worker records (its own JSONL file, joined in the parent):
- per ``acquire()`` / ``release()`` of the tooz lock object: call and return times, the token;
- per etcd request made on that thread (``EtcdClient._post``): the step of the protocol it belongs to (from the
  ``Mutex`` method it was made in: enqueue, queue, wait, state-read, take, release, leave), its path, when it went
  out (``HTTPConnection.request``), when its answer had been read (``answers.decode``), the answer's revision;
- per watch message the reader thread receives (``WatchHub._messages`` yielding it off the socket, then
  ``WatchHub._dispatch``): the mod revision of its events, and when a waiting thread got them (``Watch.batches``
  yielding); watch creates and cancels sent on the shared stream;
- requests made outside any acquire or release (the session's keepalives, tooz's heartbeat).

A handoff is a pair of holds with consecutive tokens where the next holder was already waiting when the previous
one called release(). The release txn's answer revision is the mod revision of the DELETE event of the holder's
queue key (both keys go in that txn), which is how the successor's wake-up is matched to the release:

  t0  the holder calls release()                    t3  that DELETE event is read off the successor's WebSocket
  t1  the release txn goes out                      t4  the successor's waiting thread has it
  t2  the release txn's answer has been read        t6  the successor's take txn goes out; t7 its answer is read
                                                    t5  the successor's acquire() returns

On the critical path t0 -> t1 -> t3 -> t4 -> t6 -> t7 -> t5 (the terms below sum to the handoff; t2 is the
releaser's side branch). ``release -> event`` (t3 - t1) is one commit plus one event: what etcd's
concurrency.Mutex pays for a whole handoff. The physical floors are measured in the same run on the same etcd: one
commit (a put-if-absent txn on a kept-alive ``http.client`` connection, ``lockd bench``'s etcd-floor target),
the two-txn floor (put then delete), and delete -> event (a delete txn sent, its event read by lockd's WatchHub
in the same process: one commit plus one event with nothing of the lock). Terms are also given in commits.

Stock tooz is measured in the same run by the contention scenario itself (``lockd.bench.scenarios.contention``),
and lockd untraced too, after the traced run; so is etcd's own ``concurrency.Mutex`` algorithm over the same
gateway (the bench's etcd-mutex target, lockd.bench.etcd_mutex): its handoff in the same commits, and its etcd
requests per acquisition, counted by path inside its acquire and release calls (not timed term by term).

    .venv/bin/python -m bench.handoff_breakdown                      # private etcd on loopback (~1 minute)
    .venv/bin/python -m bench.handoff_breakdown --url lockd+etcd3+http://HOST:PORT --processes 8 --cycles 100
    .venv/bin/python -m bench.handoff_breakdown --json > run-1.json     # --keep-traces DIR keeps the JSONL files
    .venv/bin/python -m bench.handoff_breakdown --table run-1.json run-2.json run-3.json   # runs as Markdown
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import functools
import http.client
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lockd.bench import etcd_admin
from lockd.bench.etcd import LocalEtcd
from lockd.bench.scenarios import contention
from lockd.bench.stats import percentile
from lockd.bench.targets import LOCKD, MUTEX, TOOZ, FloorBackend, TargetSpec, parse_endpoint
from lockd.errors import LockdError, UsageError

now = time.monotonic

#: The terms of a handoff, in critical-path order: (name, what it is, on the critical path).
TERMS: tuple[tuple[str, str, bool], ...] = (
    ("release_call_to_send", "t1-t0  release() called -> release txn sent", True),
    ("release_send_to_event", "t3-t1  release txn sent -> DELETE event on the successor's WebSocket", True),
    ("event_to_wake", "t4-t3  event read -> the successor's waiting thread has it", True),
    ("wake_to_take_send", "t6-t4  wake -> take txn sent (watch cancel, any read)", True),
    ("take_commit", "t7-t6  take txn sent -> answer read", True),
    ("take_to_return", "t5-t7  take answer -> acquire() returns", True),
    ("wake_to_return", "t5-t4  granted: first wake -> acquire() returns (the grant mark, watch cancels)", True),
    ("handoff", "t5-t0  release() called -> the successor's acquire() returns", True),
    ("release_commit", "t2-t1  release txn sent -> answer read (the releaser's side)", False),
    ("event_after_answer", "t3-t2  event read minus release answer read (< 0: event first)", False),
    ("successor_read", "a read the successor made inside the handoff (send -> answer)", False),
    ("watch_cancel", "the successor's watch cancel sent on the shared stream", False),
    ("delete_then_mark", "granted: the predecessor's DELETE woke first; its wake -> the grant mark's wake", False),
)
TERM_NAMES = tuple(name for name, _, _ in TERMS)

#: ``Mutex`` methods whose requests belong to one step of the protocol (innermost wins). A method the protocol no
#: longer has is skipped: its requests count under the step around it.
STEPS = {
    "_try_or_wait": "enqueue",
    "_wait_in_queue": "queue",
    "_wait_for_delete": "wait",
    "_state": "state-read",
    "_take": "take",
    "_delete_own_key": "release",
    "_leave_queue": "leave",
}
READ_STEPS = ("wait", "state-read")  # with a kv/ path: "wait" also sends the watch create and cancel


# -- tracing, in each worker process ----------------------------------------------------------------------------


class Tracer:
    """Wraps lockd's client, watch and lock functions in this process and keeps what they did, per thread."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.records: list[dict[str, Any]] = []  # one per acquire() / release()
        self.outside: list[dict[str, Any]] = []  # requests made outside any acquire / release
        self.received: dict[int, float] = {}  # event mod revision -> when the reader thread read its message
        self.steps: list[str] = []

    # The current acquire/release record and step stack of the calling thread.

    def _record(self) -> dict[str, Any] | None:
        return getattr(self.local, "record", None)

    def _step(self) -> str | None:
        stack = getattr(self.local, "steps", None)
        return stack[-1] if stack else None

    def _note(self, entry: dict[str, Any]) -> None:
        record = self._record()
        (record["requests"] if record is not None else self.outside).append(entry)

    def install(self) -> None:

        import lockd.etcd.answers
        from lockd.etcd.client import EtcdClient
        from lockd.etcd.watch import Watch, WatchHub
        from lockd.lock import Mutex
        from lockd.tooz_driver import LockdLock

        tracer, local = self, self.local

        self._wrap_call(LockdLock, "acquire")
        self._wrap_call(LockdLock, "release")
        for method, step in STEPS.items():
            if hasattr(Mutex, method):
                self._wrap_step(Mutex, method, step)
                self.steps.append(step)

        request = http.client.HTTPConnection.request

        def traced_request(conn: Any, *args: Any, **kwargs: Any) -> Any:
            local.sent = now()
            return request(conn, *args, **kwargs)

        http.client.HTTPConnection.request = traced_request  # type: ignore[method-assign]

        decode = lockd.etcd.answers.decode

        def traced_decode(data: bytes) -> Any:
            local.answered = now()
            return decode(data)

        lockd.etcd.answers.decode = traced_decode  # type: ignore[assignment]

        post = EtcdClient._post

        def traced_post(client: Any, pool: Any, index: int, path: str, *args: Any) -> Any:
            began = local.sent = local.answered = now()
            entry: dict[str, Any] = {"step": tracer._step(), "path": path, "urgent": pool is client._upkeep}
            try:
                answer = post(client, pool, index, path, *args)
            except BaseException as exc:
                entry["error"] = type(exc).__name__
                raise
            finally:
                ended = now()
                sent, answered = local.sent, local.answered
                entry["t_send"] = sent if sent >= began else began
                entry["t_answer"] = answered if answered >= entry["t_send"] else ended
                tracer._note(entry)
            entry["revision"] = int(answer.get("header", {}).get("revision", 0))
            return answer

        EtcdClient._post = traced_post  # type: ignore[method-assign]

        messages = WatchHub._messages

        def traced_messages(hub: Any) -> Iterator[bytes]:
            for message in messages(hub):
                local.received = now()
                yield message

        WatchHub._messages = traced_messages  # type: ignore[method-assign]

        dispatch = WatchHub._dispatch

        def traced_dispatch(hub: Any, result: dict[str, Any]) -> None:
            received = getattr(local, "received", None) or now()
            for event in result.get("events") or ():
                revision = int(event.get("kv", {}).get("mod_revision", 0))
                tracer.received.setdefault(revision, received)
            dispatch(hub, result)

        WatchHub._dispatch = traced_dispatch  # type: ignore[method-assign]

        batches = Watch.batches

        def traced_batches(watch: Any, deadline: float | None = None) -> Iterator[Any]:
            for batch in batches(watch, deadline):
                woke = now()
                revision = max((event.kv.mod_revision for event in batch), default=0)
                record = tracer._record()
                if record is not None:
                    wake = {"revision": revision, "t_recv": tracer.received.get(revision), "t_wake": woke}
                    wake["deleted"] = any(event.deleted for event in batch)
                    record["wakes"].append(wake)
                yield batch

        Watch.batches = traced_batches  # type: ignore[method-assign]

        for method, path in (("open", "ws:watch-create"), ("cancel", "ws:watch-cancel")):
            self._wrap_stream(WatchHub, method, path)

    def _wrap_call(self, cls: type, method: str) -> None:
        """acquire()/release() of the tooz lock: one record each, current for the calling thread meanwhile."""
        original = getattr(cls, method)
        tracer, local = self, self.local

        @functools.wraps(original)
        def traced(lock: Any, *args: Any, **kwargs: Any) -> Any:
            record: dict[str, Any] = {"op": method, "token_before": lock.token, "requests": [], "wakes": []}
            local.record, local.steps = record, []
            record["t_call"] = now()
            try:
                result = original(lock, *args, **kwargs)
                record["result"] = bool(result)
                return result
            finally:
                record["t_return"] = now()
                record["token"] = lock.token
                local.record = None
                tracer.records.append(record)

        setattr(cls, method, traced)

    def _wrap_step(self, cls: type, method: str, step: str) -> None:
        original = getattr(cls, method)
        local = self.local

        @functools.wraps(original)
        def traced(*args: Any, **kwargs: Any) -> Any:
            stack = getattr(local, "steps", None)
            if stack is None:
                stack = local.steps = []
            stack.append(step)
            try:
                return original(*args, **kwargs)
            finally:
                stack.pop()

        setattr(cls, method, traced)

    def _wrap_stream(self, cls: type, method: str, path: str) -> None:
        """A message on the shared watch stream, timed from the call to its return (a create waits for etcd)."""
        original = getattr(cls, method)
        tracer = self

        @functools.wraps(original)
        def traced(*args: Any, **kwargs: Any) -> Any:
            entry = {"step": tracer._step(), "path": path, "t_send": now()}
            try:
                return original(*args, **kwargs)
            finally:
                entry["t_answer"] = now()
                tracer._note(entry)

        setattr(cls, method, traced)

    def dump(self, path: Path, index: int) -> None:
        with path.open("w") as out:
            out.write(json.dumps({"type": "meta", "worker": index, "pid": os.getpid(), "steps": self.steps}) + "\n")
            for record in self.records:
                out.write(json.dumps({"type": "call", "worker": index, **record}) + "\n")
            for entry in self.outside:
                out.write(json.dumps({"type": "outside", "worker": index, **entry}) + "\n")


def traced_worker(trace_dir: str, spec: TargetSpec, name: str, index: int, *args: Any) -> None:
    """contention.worker, traced; its JSONL goes to ``trace_dir`` (runs in a spawned process)."""
    tracer = Tracer()
    tracer.install()
    try:
        contention.worker(spec, name, index, *args)
    finally:
        tracer.dump(Path(trace_dir) / f"worker-{index}.jsonl", index)


def counted_mutex_worker(count_dir: str, spec: TargetSpec, name: str, index: int, *args: Any) -> None:
    """contention.worker on the etcd-mutex target, counting the etcd requests its acquire and release calls make
    (by call and path; the session's keepalives, on their own thread, are not counted). Runs in a spawned process;
    the counts go to ``count_dir`` as JSON."""
    from lockd.bench import etcd_mutex
    from lockd.etcd.watch import WatchHub

    counts: Counter[str] = Counter()
    local = threading.local()

    def counted(cls: type, method: str, label: Callable[[tuple[Any, ...]], str]) -> None:
        original = getattr(cls, method)

        @functools.wraps(original)
        def wrapper(*a: Any, **kw: Any) -> Any:
            call = getattr(local, "call", None)
            if call is not None:
                counts[f"{call} {label(a)}"] += 1
            return original(*a, **kw)

        setattr(cls, method, wrapper)

    def calls(method: str) -> None:
        original = getattr(etcd_mutex.EtcdMutex, method)

        @functools.wraps(original)
        def wrapper(*a: Any, **kw: Any) -> Any:
            local.call = method
            try:
                return original(*a, **kw)
            finally:
                local.call = None

        setattr(etcd_mutex.EtcdMutex, method, wrapper)

    counted(etcd_mutex._Gateway, "post", lambda a: a[1])
    counted(WatchHub, "open", lambda a: "ws:watch-create")
    counted(WatchHub, "cancel", lambda a: "ws:watch-cancel")
    calls("acquire")
    calls("release")
    try:
        contention.worker(spec, name, index, *args)
    finally:
        (Path(count_dir) / f"mutex-{index}.json").write_text(json.dumps(counts))


def run_mutex(endpoint: str, processes: int, cycles: int, hold: float) -> tuple[dict, list[float], dict[str, float]]:
    """The etcd-mutex target in the contention loop: its metrics, handoffs (seconds), requests per acquisition."""
    spec = TargetSpec(MUTEX, endpoint, 10.0, tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="lockd-handoff-mutex-") as tmp:
        target = functools.partial(counted_mutex_worker, tmp)
        metrics, handoffs, _ = contention.run_target(spec, processes, cycles, hold, target=target)
        counts: Counter[str] = Counter()
        for path in Path(tmp).glob("mutex-*.json"):
            counts.update(json.loads(path.read_text()))
    per = {kind: count / metrics["acquisitions"] for kind, count in sorted(counts.items())}
    return metrics, handoffs, per


# -- the floors, in the bench process -----------------------------------------------------------------------------


def measure_commit_floor(endpoint: str, cycles: int) -> dict[str, list[float]]:
    """Seconds per put-if-absent txn and per put+delete pair, on one kept-alive connection."""
    backend = FloorBackend(endpoint)
    lock = backend.lock(f"handoff-{uuid.uuid4().hex[:8]}")
    puts: list[float] = []
    pairs: list[float] = []
    try:
        for i in range(cycles + 20):  # 20 warm-up cycles
            started = now()
            if not lock.acquire():
                raise RuntimeError("etcd floor: the put-if-absent failed (key left over?)")
            put = now()
            lock.release()
            if i >= 20:
                puts.append(put - started)
                pairs.append(now() - started)
    finally:
        backend.close()
    return {"commit": puts, "two_txn": pairs}


def measure_event_floor(endpoint: str, cycles: int) -> dict[str, list[float]]:
    """Seconds from a delete txn sent to its event read off lockd's WatchHub, and to the waiting thread having it."""
    from lockd.etcd.watch import WatchHub
    from lockd.etcd.wire import b64

    key = f"/lockd/bench/handoff-event/{uuid.uuid4().hex[:8]}".encode()
    host, _, port = endpoint.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    put = json.dumps({"compare": [], "success": [{"request_put": {"key": b64(key), "value": b64(b"x")}}]}).encode()
    delete = json.dumps({"compare": [], "success": [{"request_delete_range": {"key": b64(key)}}]}).encode()
    received: list[float] = []
    messages = WatchHub._messages

    def timed_messages(hub: WatchHub) -> Iterator[bytes]:  # when the reader thread has a message off the socket
        for message in messages(hub):
            received.append(now())
            yield message

    # The hub's reader starts in its constructor: the timed reading goes in for that moment only (this hub's).
    WatchHub._messages = timed_messages  # type: ignore[method-assign]
    try:
        hub = WatchHub(0, f"ws://{endpoint}/v3/watch", 10.0)
    finally:
        WatchHub._messages = messages  # type: ignore[method-assign]

    def txn(body: bytes) -> None:
        conn.request("POST", "/v3/kv/txn", body, {"Content-Type": "application/json"})
        conn.getresponse().read()

    to_event: list[float] = []
    to_wake: list[float] = []
    try:
        watch = hub.open(key, filters=("NOPUT",))
        batches = watch.batches(now() + 60 + cycles)
        for i in range(cycles + 20):
            txn(put)
            received.clear()
            sent = now()
            txn(delete)
            next(batches)
            woke = now()
            if i >= 20 and received:
                to_event.append(received[0] - sent)
                to_wake.append(woke - sent)
        watch.close()
    finally:
        hub.close()
        conn.close()
    return {"delete_to_event": to_event, "delete_to_wake": to_wake}


# -- joining the traces -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Hold:
    worker: int
    acquire: dict[str, Any]
    release: dict[str, Any] | None
    first: bool  # the worker's first acquisition (its connections and watch stream were new)


def load_holds(trace_dir: Path) -> tuple[list[Hold], list[dict[str, Any]], list[str]]:
    """Holds in token order, the requests made outside any call, and the steps the tracer could name."""
    holds: list[Hold] = []
    outside: list[dict[str, Any]] = []
    steps: list[str] = []
    for path in sorted(trace_dir.glob("worker-*.jsonl")):
        calls: list[dict[str, Any]] = []
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if item["type"] == "meta":
                steps = item["steps"]
            elif item["type"] == "call":
                calls.append(item)
            else:
                outside.append(item)
        calls.sort(key=lambda c: c["t_call"])
        first = True
        for i, call in enumerate(calls):
            if call["op"] != "acquire" or not call.get("result") or call.get("token") is None:
                continue
            release = next((c for c in calls[i + 1 :] if c["op"] == "release"), None)
            if release is not None and release["token_before"] != call["token"]:
                release = None
            holds.append(Hold(call["worker"], call, release, first))
            first = False
    holds.sort(key=lambda h: h.acquire["token"])
    return holds, outside, steps


def _release_txn(release: dict[str, Any]) -> dict[str, Any] | None:
    txns = [r for r in release["requests"] if r["path"] == "kv/txn" and "error" not in r]
    marked = [r for r in txns if r["step"] == "release"]
    return (marked or txns or [None])[0]


class InFlight:
    """Every traced request of every worker, to ask which were in flight at etcd during a given one."""

    def __init__(self, holds: list[Hold]) -> None:
        calls = [call for hold in holds for call in (hold.acquire, hold.release) if call is not None]
        self.requests = sorted(
            (r for call in calls for r in call["requests"] if r["path"].startswith("kv/")), key=lambda r: r["t_send"]
        )
        self.sends = [r["t_send"] for r in self.requests]
        self.longest = max((r["t_answer"] - r["t_send"] for r in self.requests), default=0.0)

    def during(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """The other etcd requests (kv/*) sent before ``request``'s answer and answered after it was sent."""
        start, end = request["t_send"], request["t_answer"]
        first = bisect.bisect_left(self.sends, start - self.longest)
        last = bisect.bisect_right(self.sends, end)
        return [r for r in self.requests[first:last] if r is not request and r["t_answer"] > start]


def handoff_terms(holds: list[Hold]) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds per term (see TERMS) over every real handoff, and counts that explain what was left out."""
    terms: dict[str, list[float]] = {name: [] for name in TERM_NAMES}
    counts: Counter[str] = Counter()
    takes_per_handoff: list[int] = []
    reads_per_handoff: list[int] = []
    in_flight = InFlight(holds)
    beside_take: Counter[str] = Counter()  # other requests in flight during the winning take, by step and path
    take_by_crowd: dict[str, list[float]] = {}  # take commit by how many other requests were in flight
    beside_release: Counter[str] = Counter()  # the same for the release txn (the grant, since issue 25)
    release_by_crowd: dict[str, list[float]] = {}
    for previous, hold in zip(holds, holds[1:], strict=False):
        release, acquire = previous.release, hold.acquire
        if release is None:
            counts["no_release_traced"] += 1
            continue
        t0 = release["t_call"]
        if acquire["t_call"] >= t0:
            counts["not_waiting"] += 1  # the lock was idle: an acquire, not a handoff
            continue
        if hold.first:
            counts["first_acquire_excluded"] += 1
            continue
        counts["handoffs"] += 1
        t5 = acquire["t_return"]
        terms["handoff"].append(t5 - t0)
        sent_release = _release_txn(release)
        inside = [r for r in acquire["requests"] if r["t_send"] >= t0]
        takes = [r for r in inside if r["step"] == "take" and r["path"] == "kv/txn"]
        reads = [r for r in inside if r["step"] in READ_STEPS and r["path"].startswith("kv/")]
        takes_per_handoff.append(len(takes))
        reads_per_handoff.append(len(reads))
        terms["successor_read"].extend(r["t_answer"] - r["t_send"] for r in reads)
        if sent_release is None:
            counts["release_txn_missing"] += 1
            continue
        t1, t2, revision = sent_release["t_send"], sent_release["t_answer"], sent_release.get("revision")
        terms["release_call_to_send"].append(t1 - t0)
        terms["release_commit"].append(t2 - t1)
        crowd = in_flight.during(sent_release)
        beside_release.update(f"{r['step']} {r['path']}" for r in crowd)
        release_by_crowd.setdefault("3+" if len(crowd) >= 3 else str(len(crowd)), []).append(t2 - t1)
        wake = next((w for w in acquire["wakes"] if w["revision"] == revision and w["t_recv"] is not None), None)
        winning = next((r for r in reversed(takes) if r.get("revision") == acquire["token"]), None)
        if wake is None:
            counts["no_event"] += 1  # woken by a read that found the key gone, not by the release's event
        else:
            t3, t4 = wake["t_recv"], wake["t_wake"]
            terms["release_send_to_event"].append(t3 - t1)
            terms["event_after_answer"].append(t3 - t2)
            terms["event_to_wake"].append(t4 - t3)
            terms["watch_cancel"].extend(
                r["t_answer"] - r["t_send"] for r in inside if r["path"] == "ws:watch-cancel" and r["t_send"] >= t4
            )
            if winning is not None:
                terms["wake_to_take_send"].append(winning["t_send"] - t4)
        if winning is None:
            counts["no_take"] += 1
            if wake is not None:
                terms["wake_to_return"].append(t5 - wake["t_wake"])
                same = [w for w in acquire["wakes"] if w["revision"] == revision]
                if len(same) > 1 and same[0]["deleted"]:
                    counts["delete_woke_first"] += 1
                    terms["delete_then_mark"].append(same[1]["t_wake"] - same[0]["t_wake"])
            continue
        t6, t7 = winning["t_send"], winning["t_answer"]
        terms["take_commit"].append(t7 - t6)
        terms["take_to_return"].append(t5 - t7)
        # The releaser queues again at once (enqueue txn, watch create, read): with the take at etcd meanwhile?
        crowd = in_flight.during(winning)
        beside_take.update(f"{r['step']} {r['path']}" for r in crowd)
        take_by_crowd.setdefault("3+" if len(crowd) >= 3 else str(len(crowd)), []).append(t7 - t6)
    n = counts["handoffs"]
    extra = {
        "counts": dict(counts),
        "take_txns_per_handoff": sum(takes_per_handoff) / n if n else math.nan,
        "reads_per_handoff": sum(reads_per_handoff) / n if n else math.nan,
        "handoffs_with_a_read": sum(1 for k in reads_per_handoff if k) / n if n else math.nan,
        "in_flight_during_take": {kind: k / n for kind, k in sorted(beside_take.items())} if n else {},
        "take_commit_p50_ms_by_in_flight": {
            k: {"n": len(v), "p50_ms": percentile(v, 50) * 1000.0} for k, v in sorted(take_by_crowd.items())
        },
        "in_flight_during_release": {kind: k / n for kind, k in sorted(beside_release.items())} if n else {},
        "release_commit_p50_ms_by_in_flight": {
            k: {"n": len(v), "p50_ms": percentile(v, 50) * 1000.0} for k, v in sorted(release_by_crowd.items())
        },
    }
    return terms, extra


def requests_per_acquisition(holds: list[Hold], outside: list[dict[str, Any]]) -> dict[str, float]:
    """Each kind of etcd request (step and path) per acquisition, in acquire and release calls and around them.

    Requests outside the calls (keepalives, tooz's heartbeat) count while the workers were contending: from the
    first acquire call to the last release's return.
    """
    if not holds:
        return {}
    kinds: Counter[str] = Counter()
    for hold in holds:
        for call in (hold.acquire, hold.release):
            for r in call["requests"] if call else ():
                kinds[f"{r['step'] or call['op']} {r['path']}"] += 1
    began = min(h.acquire["t_call"] for h in holds)
    ended = max((h.release or h.acquire)["t_return"] for h in holds)
    for r in outside:
        if began <= r["t_send"] <= ended:
            kinds[f"outside {r['path']}"] += 1
    return {kind: count / len(holds) for kind, count in sorted(kinds.items())}


# -- the report ---------------------------------------------------------------------------------------------------


def summary(seconds: list[float], commit_s: float) -> dict[str, Any]:
    ms = [s * 1000.0 for s in seconds]
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    commit_ms = commit_s * 1000.0
    return {
        "n": len(ms),
        "p50_ms": p50,
        "p99_ms": p99,
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
        "p50_commits": p50 / commit_ms,
        "p99_commits": p99 / commit_ms,
    }


def run(
    endpoint: str,
    processes: int,
    cycles: int,
    hold_ms: float,
    floor_cycles: int,
    keep: Path | None,
    etcd_mutex: bool = True,
) -> dict:
    """One whole measurement on the etcd at ``endpoint``; the report as a JSON-able dict.

    ``etcd_mutex``: also run etcd's own Mutex in the same loop (``etcd_mutex`` in the report; absent without it).
    """
    hold = hold_ms / 1000.0
    lockd_spec = TargetSpec(LOCKD, endpoint, 10.0, tempfile.gettempdir())
    tooz_spec = TargetSpec(TOOZ, endpoint, 10.0, tempfile.gettempdir())
    started, load_at_start = time.time(), os.getloadavg()[0]
    floor = measure_commit_floor(endpoint, floor_cycles // 2)
    event_floor = measure_event_floor(endpoint, max(20, floor_cycles // 5))
    with tempfile.TemporaryDirectory(prefix="lockd-handoff-") as tmp:
        trace_dir = keep or Path(tmp)
        trace_dir.mkdir(parents=True, exist_ok=True)
        for old in trace_dir.glob("worker-*.jsonl"):
            old.unlink()
        target = functools.partial(traced_worker, str(trace_dir))
        traced, _, _ = contention.run_target(lockd_spec, processes, cycles, hold, target=target)
        holds, outside, steps = load_holds(trace_dir)
    plain, _, _ = contention.run_target(lockd_spec, processes, cycles, hold)
    # etcd-mutex before stock tooz, whose leases (one per attempt, never revoked) stay in etcd until their TTL
    mutex = run_mutex(endpoint, processes, cycles, hold) if etcd_mutex else None
    stock, _, _ = contention.run_target(tooz_spec, processes, cycles, hold)
    for name, values in measure_commit_floor(endpoint, floor_cycles - floor_cycles // 2).items():
        floor[name].extend(values)

    commit_s = percentile(floor["commit"], 50)
    seconds, extra = handoff_terms(holds)
    floors = {
        "commit": summary(floor["commit"], commit_s),
        "two_txn": summary(floor["two_txn"], commit_s),
        "delete_to_event": summary(event_floor["delete_to_event"], commit_s),
        "delete_to_wake": summary(event_floor["delete_to_wake"], commit_s),
    }
    terms = {
        name: {"what": what, "critical_path": path, **summary(seconds[name], commit_s)} for name, what, path in TERMS
    }
    report = {
        "machine": {
            "nproc": os.cpu_count(),
            "loadavg_at_start": round(load_at_start, 2),
            "loadavg_at_end": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "etcd_version": etcd_admin.server_version(endpoint),
            "duration_s": round(time.time() - started, 1),
        },
        "config": {"processes": processes, "cycles": cycles, "hold_ms": hold_ms, "floor_cycles": floor_cycles},
        "traced_steps": steps,
        "floors": floors,
        "terms": terms,
        "handoffs": extra,
        "requests_per_acquisition": requests_per_acquisition(holds, outside),
        "acquisitions": {
            "lockd_traced_per_s": traced["throughput_per_s"],
            "lockd_per_s": plain["throughput_per_s"],
            "tooz_per_s": stock["throughput_per_s"],
            "lockd_vs_tooz": plain["throughput_per_s"] / stock["throughput_per_s"],
            "lockd_traced_vs_tooz": traced["throughput_per_s"] / stock["throughput_per_s"],
            "counters_exact": all(m["counter_exact"] for m in (traced, plain, stock)),
            "lockd_handoff_p50_ms": plain["handoff_p50_ms"],
            "lockd_handoff_p99_ms": plain["handoff_p99_ms"],
            "lockd_traced_handoff_p50_ms": traced["handoff_p50_ms"],
        },
    }
    if mutex is not None:
        metrics, handoffs, requests = mutex
        report["etcd_mutex"] = {
            "handoff": summary(handoffs, commit_s),
            "per_s": metrics["throughput_per_s"],
            "counter_exact": metrics["counter_exact"],
            "requests_per_acquisition": requests,
        }
        report["acquisitions"]["counters_exact"] &= metrics["counter_exact"]
    return report


def _fmt(value: float, spec: str = "{:.3f}") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else spec.format(value)


def render(report: dict[str, Any]) -> str:
    m, c, f = report["machine"], report["config"], report["floors"]
    commit = f["commit"]["p50_ms"]
    lines = [
        f"handoff breakdown: {c['processes']} processes x {c['cycles']} cycles, {c['hold_ms']:g} ms hold; "
        f"{m['nproc']} CPUs, load {m['loadavg_at_start']}, etcd {m['etcd_version']}, Python {m['python']}",
        "",
        f"floors (1 commit = put-if-absent p50 = {commit:.3f} ms)",
    ]
    header = (
        f"   {'term':<24} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'p50 commits':>11} {'p99 commits':>11}"
    )

    def row(name: str, s: dict[str, Any]) -> str:
        return (
            f"   {name:<24} {s['n']:>5} {_fmt(s['p50_ms']):>8} {_fmt(s['p99_ms']):>8} {_fmt(s['mean_ms']):>8} "
            f"{_fmt(s['p50_commits'], '{:.2f}'):>11} {_fmt(s['p99_commits'], '{:.2f}'):>11}"
        )

    lines += [
        header,
        *(row(name, s) for name, s in f.items()),
        "",
        "handoff terms (critical path; they sum to the handoff)",
    ]
    lines.append(header)
    terms = report["terms"]
    lines += [row(name, s) + "   " + s["what"] for name, s in terms.items() if s["critical_path"]]
    lines += ["", "beside the path"]
    lines += [row(name, s) + "   " + s["what"] for name, s in terms.items() if not s["critical_path"]]
    h, a = report["handoffs"], report["acquisitions"]
    handoff, event = terms["handoff"], terms["release_send_to_event"]
    with_read = _fmt(h["handoffs_with_a_read"], "{:.1%}")
    lines += [
        "",
        f"handoffs {h['counts']}",
        f"   take txns per handoff {_fmt(h['take_txns_per_handoff'], '{:.2f}')}, successor reads per handoff "
        f"{_fmt(h['reads_per_handoff'], '{:.2f}')} (handoffs with a read: {with_read})",
        "   other etcd requests in flight during the winning take, per handoff: "
        + ", ".join(f"{kind} {k:.2f}" for kind, k in h["in_flight_during_take"].items()),
        "   take commit p50 by other requests in flight: "
        + ", ".join(f"{k}: {v['p50_ms']:.3f} ms (n={v['n']})" for k, v in h["take_commit_p50_ms_by_in_flight"].items()),
        "   other etcd requests in flight during the release txn, per handoff: "
        + ", ".join(f"{kind} {k:.2f}" for kind, k in h.get("in_flight_during_release", {}).items()),
        "   release commit p50 by other requests in flight: "
        + ", ".join(
            f"{k}: {v['p50_ms']:.3f} ms (n={v['n']})"
            for k, v in h.get("release_commit_p50_ms_by_in_flight", {}).items()
        ),
        f"   handoff p50 {_fmt(handoff['p50_ms'])} ms = {_fmt(handoff['p50_commits'], '{:.2f}')} commits, of which "
        f"one commit + one event (release sent -> event) {_fmt(event['p50_ms'])} ms; above it "
        f"{_fmt(handoff['mean_ms'] - event['mean_ms'])} ms on average",
        "",
        "etcd requests per acquisition (step and path; ws: = a message on the shared watch stream)",
        *(f"   {kind:<32} {per:.2f}" for kind, per in report["requests_per_acquisition"].items()),
        "",
        f"acquisitions/s: lockd {a['lockd_per_s']:.1f} (traced {a['lockd_traced_per_s']:.1f}), stock tooz "
        f"{a['tooz_per_s']:.1f}: lockd {a['lockd_vs_tooz']:.2f}x stock tooz (traced {a['lockd_traced_vs_tooz']:.2f}x)",
        f"   lockd handoff p50 {a['lockd_handoff_p50_ms']:.2f} ms (traced {a['lockd_traced_handoff_p50_ms']:.2f}), "
        f"p99 {a['lockd_handoff_p99_ms']:.2f} ms (the contention scenario's definition); "
        f"counters {'exact' if a['counters_exact'] else 'WRONG'}",
    ]
    mutex = report.get("etcd_mutex")
    if mutex:
        h = mutex["handoff"]
        lines += [
            "",
            f"etcd-mutex (etcd's concurrency.Mutex over the same gateway): {mutex['per_s']:.1f} acquisitions/s, "
            f"handoff p50 {_fmt(h['p50_ms'])} ms = {_fmt(h['p50_commits'], '{:.2f}')} commits, "
            f"p99 {_fmt(h['p99_ms'])} ms = {_fmt(h['p99_commits'], '{:.2f}')} commits (n={h['n']})",
            "   etcd requests per acquisition (call and path, inside acquire and release)",
            *(f"   {kind:<32} {per:.2f}" for kind, per in mutex["requests_per_acquisition"].items()),
        ]
    return "\n".join(lines)


def markdown(reports: list[dict[str, Any]]) -> str:
    """Runs side by side as a Markdown table: per term, each run's p50 in ms (in that run's commits), p99, mean."""

    def column(stats: list[dict[str, Any]], cell: Callable[[dict[str, Any]], str]) -> str:
        return " · ".join("-" if s["n"] == 0 else cell(s) for s in stats)

    span = {name: f" ({text.split()[0]})" if text[0] == "t" and text[1].isdigit() else "" for name, text, _ in TERMS}
    runs = " · ".join(str(i + 1) for i in range(len(reports)))
    lines = [f"| term | p50 ms (commits), runs {runs} | p99 ms | mean ms | n |", "|---|---|---|---|---|"]
    for table, names in (("floors", list(reports[0]["floors"])), ("terms", TERM_NAMES)):
        for name in names:
            label = f"floor: {name}" if table == "floors" else f"{name}{span[name]}"
            stats = [r[table][name] for r in reports]
            cells = [
                column(stats, lambda s: f"{s['p50_ms']:.2f} ({s['p50_commits']:.2f})"),
                column(stats, lambda s: f"{s['p99_ms']:.2f}"),
                column(stats, lambda s: f"{s['mean_ms']:.2f}"),
                " · ".join(str(s["n"]) for s in stats),
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rates = " · ".join(
        f"{a['lockd_per_s']:.0f} ({a['lockd_traced_per_s']:.0f}) / {a['tooz_per_s']:.0f} = {a['lockd_vs_tooz']:.2f}x"
        for a in (r["acquisitions"] for r in reports)
    )
    loads = " · ".join(f"{r['machine']['loadavg_at_start']}-{r['machine']['loadavg_at_end']}" for r in reports)
    lines.append(f"| acquisitions/s: lockd (traced) / stock tooz = ratio | {rates} | | | |")
    if all("etcd_mutex" in r for r in reports):  # runs from before the etcd-mutex target have none
        stats = [r["etcd_mutex"]["handoff"] for r in reports]
        cells = [
            column(stats, lambda s: f"{s['p50_ms']:.2f} ({s['p50_commits']:.2f})"),
            column(stats, lambda s: f"{s['p99_ms']:.2f}"),
            column(stats, lambda s: f"{s['mean_ms']:.2f}"),
            " · ".join(str(s["n"]) for s in stats),
        ]
        lines.append("| etcd-mutex: handoff | " + " | ".join(cells) + " |")
        rates = " · ".join(f"{r['etcd_mutex']['per_s']:.0f}" for r in reports)
        lines.append(f"| acquisitions/s: etcd-mutex | {rates} | | | |")
    lines.append(f"| load average at start-end (the bench's own processes included) | {loads} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", "--backend-url", dest="url", help="an etcd to use (default: start a private one)")
    parser.add_argument("--processes", type=int, default=8, help="contending processes (default 8)")
    parser.add_argument("--cycles", type=int, default=100, help="cycles per process (default 100)")
    parser.add_argument("--hold-ms", type=float, default=1.0, help="time each holder holds (default 1 ms)")
    parser.add_argument("--floor-cycles", type=int, default=1000, help="floor cycles, half before, half after")
    parser.add_argument("--keep-traces", type=Path, help="write the workers' JSONL traces here and keep them")
    parser.add_argument(
        "--no-etcd-mutex", dest="etcd_mutex", action="store_false",
        help="leave out etcd's own Mutex in the same loop (the etcd-mutex target; one contention run less)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON (NaN as null)")
    parser.add_argument("--table", nargs="+", type=Path, metavar="JSON", help="print earlier --json runs as Markdown")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown([json.loads(path.read_text()) for path in args.table]))
        return 0
    if args.processes < 2 or args.cycles < 2 or args.floor_cycles < 2 or args.hold_ms < 0:
        parser.error("--processes, --cycles and --floor-cycles must be at least 2, --hold-ms at least 0")
    measure: Callable[[str], dict] = functools.partial(
        run, processes=args.processes, cycles=args.cycles, hold_ms=args.hold_ms, floor_cycles=args.floor_cycles,
        keep=args.keep_traces, etcd_mutex=args.etcd_mutex,
    )  # fmt: skip
    try:
        if args.url:
            report = measure(parse_endpoint(args.url))
            report["machine"]["etcd"] = f"given by --url ({args.url})"
        else:
            with LocalEtcd() as etcd:
                report = measure(etcd.endpoint)
                report["machine"]["etcd"] = f"private etcd started by the bench ({etcd.binary})"
    except UsageError as exc:
        parser.error(str(exc))
    except (LockdError, RuntimeError, OSError) as exc:  # etcd unreachable or would not start, a worker failed
        print(f"handoff_breakdown: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_nan_to_none(report), indent=2))
    else:
        print(render(report))
    return 0


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
