"""One waiters run in a process of its own: a holder, N waiters queued behind it, what that costs, how they drain.

Run as ``python -m lockd.bench.waiters_child '<json>'`` by lockd.bench.scenarios.waiters; prints one JSON line.
A process of its own because what is measured is the process: its TCP connections to etcd, its RSS, its file
descriptor limit (lowered here with ``setrlimit`` for the issue-14 floor), and, for the green-thread variant,
eventlet's monkey-patching, which must happen before anything else is imported.

Steps: one coordinator (as one cinder-volume process has one); a *bystander* lock and the lock under test are
taken by the holder; N waiters (threads, or green threads when patched) each take their own lock object of the
same name and block in ``acquire``; once they are all waiting (lockd: N queue keys in etcd; stock tooz, which
does not queue: every waiter has polled at least once) the process's connections to etcd, its open
descriptors and RSS are sampled; then the holder releases and every waiter acquires and releases in turn.
The holder's and bystander's lock keys are read directly from etcd (one connection opened before the waiters,
so a descriptor shortage cannot hide the answer) before the release and at the end: a key gone or re-created
means that lock was lost while held, e.g. because the session's keepalive could not get a connection.
Failures (an ``acquire`` that raises, such as EMFILE) are counted and reported, never raised.
"""

from __future__ import annotations

import json
import sys


def _patch_first(argv: list[str]) -> dict:
    config = json.loads(argv[1])
    if config.get("eventlet"):
        import eventlet

        eventlet.monkey_patch()
    if config.get("fd_limit"):
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(config["fd_limit"]), hard))
    return config


if __name__ == "__main__":
    _CONFIG = _patch_first(sys.argv)

import base64  # noqa: E402
import http.client  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import select  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Any  # noqa: E402

from lockd.bench.stats import latency_summary  # noqa: E402
from lockd.bench.targets import LOCKD, TargetSpec  # noqa: E402
from lockd.etcd import keys  # noqa: E402

# Stock tooz does not queue: a waiter is "waiting" once it has polled, and it polls at least once a second.
_TOOZ_SETTLE = 2.0
_LOCKD_SETTLE = 0.5
_QUEUE_STALL = 10.0  # seconds without a new queue key: the waiters that could queue have


class Inspector:
    """Direct reads of etcd on one connection opened up front (it must work when descriptors run out)."""

    def __init__(self, endpoint: str) -> None:
        host, _, port = endpoint.rpartition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.conn.connect()

    def _range(self, body: dict[str, Any]) -> dict[str, Any]:
        self.conn.request("POST", "/v3/kv/range", json.dumps(body).encode(), {"Content-Type": "application/json"})
        return json.loads(self.conn.getresponse().read())

    def token(self, key: bytes) -> int:
        """The lock key's token (its mod_revision), 0 when absent."""
        kvs = self._range({"key": base64.b64encode(key).decode()}).get("kvs", [])
        return int(kvs[0].get("mod_revision", 0)) if kvs else 0

    def count(self, prefix: bytes) -> int:
        body = {
            "key": base64.b64encode(prefix).decode(),
            "range_end": base64.b64encode(keys.range_end(prefix)).decode(),
            "count_only": True,
        }
        return int(self._range(body).get("count", 0))


def run(config: dict[str, Any]) -> dict[str, Any]:
    spec = TargetSpec(config["kind"], config["endpoint"], float(config["lease_ttl"]), config.get("lock_dir", "/tmp"))
    waiters = int(config["waiters"])
    queue_timeout = float(config.get("queue_timeout", 120))
    serve_timeout = float(config.get("serve_timeout", 300))
    inspector = Inspector(spec.endpoint)
    out: dict[str, Any] = {
        "waiters": waiters,
        "green": bool(config.get("eventlet")),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
    name = f"bench-waiters-{spec.kind}-{uuid.uuid4().hex[:8]}"
    bystander_name = name + "-bystander"
    backend = spec.open(f"bench-waiters-{spec.kind}-{os.getpid()}")
    bystander = backend.lock(bystander_name)
    holder = backend.lock(name)
    if not (bystander.acquire(blocking=True) and holder.acquire(blocking=True)):
        raise RuntimeError("the holder could not take its locks")
    tokens = {
        "holder": inspector.token(keys.lock_key(name)),
        "bystander": inspector.token(keys.lock_key(bystander_name)),
    }
    _tell_parent({"phase": "holding", "inspector_port": inspector.conn.sock.getsockname()[1]})

    mutex = threading.Lock()
    started = [0]
    finished = [0]
    holds: list[tuple[float, float, float]] = []  # (acquired, release started, released)
    errors: Counter[str] = Counter()
    everyone_done = threading.Event()

    def finish() -> None:
        with mutex:
            finished[0] += 1
            if finished[0] == waiters:
                everyone_done.set()

    def waiter() -> None:
        try:
            lock = backend.lock(name)
            with mutex:
                started[0] += 1
            if not lock.acquire(blocking=True):
                errors["acquire returned False"] += 1
                return
            acquired = time.monotonic()
            try:
                lock.release()
            finally:
                holds.append((acquired, acquired, time.monotonic()))
        except Exception as exc:  # counted, not raised: the bench reports failures such as EMFILE
            errors[_describe(exc)] += 1
        finally:
            finish()

    spawn_started = time.monotonic()
    threads = []
    for _ in range(waiters):
        thread = threading.Thread(target=waiter, daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread"
            errors[f"thread start: {exc}"] += 1
            finish()
            continue
        threads.append(thread)
    out["queued"] = _wait_until_waiting(spec.kind, name, waiters, started, finished, inspector, queue_timeout)
    out["queue_s"] = time.monotonic() - spawn_started
    _tell_parent({"phase": "waiting"})
    _wait_for_parent()  # it samples this process's connections, descriptors and RSS from outside meanwhile
    out["holder_lost_before_release"] = inspector.token(keys.lock_key(name)) != tokens["holder"]
    out["failed_before_release"] = sum(errors.values())

    release_started = time.monotonic()
    releaser = _Background(holder.release)
    everyone_done.wait(serve_timeout)
    if releaser.error is not None:
        errors[f"holder release: {releaser.error}"] += 1
    elif not releaser.finished:
        errors["holder release: still running"] += 1
    out["served"] = len(holds)
    out["all_served"] = len(holds) == waiters
    ordered = sorted(holds)
    if ordered:
        out["served_s"] = max(h[2] for h in ordered) - release_started
        previous = [release_started] + [h[1] for h in ordered[:-1]]
        handoffs = [h[0] - prev for h, prev in zip(ordered, previous, strict=True)]
        summary = latency_summary(handoffs)
        out["handoff_p50_ms"], out["handoff_p99_ms"] = summary["p50_ms"], summary["p99_ms"]
    out["bystander_lost"] = inspector.token(keys.lock_key(bystander_name)) != tokens["bystander"]
    out["lock_lost"] = out["holder_lost_before_release"] or out["bystander_lost"]
    out["errors"] = sum(errors.values())
    out["error_kinds"] = dict(errors.most_common(5))
    out["cleanup"] = (bystander, backend)
    return out


def _wait_until_waiting(
    kind: str,
    name: str,
    waiters: int,
    started: list[int],
    finished: list[int],
    inspector: Inspector,
    timeout: float,
) -> int | None:
    """Block until every waiter is waiting (or failed); lockd: returns the queue keys counted in etcd."""
    deadline = time.monotonic() + timeout
    while started[0] + finished[0] < waiters and time.monotonic() < deadline:
        time.sleep(0.05)
    if kind != LOCKD:
        time.sleep(_TOOZ_SETTLE)
        return None
    queued, grew_at = 0, time.monotonic()
    while time.monotonic() < deadline:
        count = inspector.count(keys.queue_prefix(name))
        if count + finished[0] >= waiters:
            queued = count
            break
        if count > queued:
            queued, grew_at = count, time.monotonic()
        elif time.monotonic() - grew_at > _QUEUE_STALL:
            break  # e.g. out of descriptors: the rest keep retrying and will not queue; measure what is
        time.sleep(0.1)
    time.sleep(_LOCKD_SETTLE)  # a queue key is put just before its watch opens
    return queued


def _tell_parent(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def _wait_for_parent() -> None:
    """Block until the parent writes a line; select() is green under eventlet, so waiters go on meanwhile."""
    while not select.select([sys.stdin], [], [], 0.1)[0]:
        pass
    sys.stdin.readline()


def _describe(exc: BaseException) -> str:
    """One line naming the error and its cause (tooz wraps EMFILE in a ToozConnectionError without a message)."""
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and not str(exc):
        text += f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    return text[:200]


class _Background:
    """Run ``call`` in a daemon thread: a call that never returns (a release retried for ever) cannot hang
    the run; ``finished`` and ``error`` say how it went."""

    def __init__(self, call: Any) -> None:
        self.finished = False
        self.error: str | None = None
        self._call = call
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._call()
        except Exception as exc:
            self.error = _describe(exc)
        self.finished = True


def _clean_up(bystander: Any, backend: Any) -> None:
    """Release the bystander and stop the coordinator, giving up after 10 s (the leases then run out)."""

    def both() -> None:
        bystander.release()
        backend.close()

    _Background(both).thread.join(10)


if __name__ == "__main__":
    try:
        result = run(_CONFIG)
    except BaseException as exc:  # one JSON line whatever happens, so the parent can report it
        result = {"crashed": f"{type(exc).__name__}: {exc}"[:300]}
    cleanup = result.pop("cleanup", None)
    print(json.dumps(result), flush=True)
    if cleanup is not None:
        _clean_up(*cleanup)
    os._exit(0)  # waiters may still be blocked (not all served): do not wait for them
