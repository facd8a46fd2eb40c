"""Crash recovery: how long until a waiting process gets a lock whose holder died or stopped.

A holder process (``multiprocessing`` spawn) takes the lock; a waiter in the bench process is already blocked
in ``acquire``; then the holder gets
- SIGKILL: nothing runs in it, so the lock goes only when its lease runs out (about the TTL for both);
- SIGTERM, whose handler calls the coordinator's ``stop()`` (a clean service stop): lockd releases and revokes
  at once, stock tooz's ``stop()`` releases nothing, so the waiter still waits out the lease.
Both use the same TTL (lockd ``lease_ttl``, stock tooz ``lock_timeout``). The number is the time from the
signal to the waiter's ``acquire`` returning.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from typing import Any

from lockd.bench.result import ScenarioResult
from lockd.bench.targets import TargetSpec

KILL = "sigkill"
CLEAN = "clean_stop"
# The waiter must already be waiting when the holder goes: this head start is a benchmark setting, not a wait
# for a condition (a lockd waiter is queued and watching well within it; stock tooz polls once a second anyway).
WAITER_HEAD_START = 0.5


def holder(spec: TargetSpec, name: str, mode: str, ready: Any) -> None:
    """Take the lock, say so, and sleep until a signal (runs in a spawned process)."""
    backend = None

    def stop(signum: int, frame: object) -> None:
        if backend is not None:
            backend.close()
        os._exit(0)

    if mode == CLEAN:
        signal.signal(signal.SIGTERM, stop)  # installed first, so lockd leaves it alone
    backend = spec.open(f"bench-holder-{spec.kind}-{os.getpid()}")
    lock = backend.lock(name)
    if lock.acquire(blocking=True):
        ready.set()
    while True:
        time.sleep(1)


def _recovery(spec: TargetSpec, mode: str, lease_ttl: float) -> float:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    name = f"bench-crash-{spec.kind}-{uuid.uuid4().hex[:8]}"
    proc = ctx.Process(target=holder, args=(spec, name, mode, ready), daemon=True)
    proc.start()
    waiter = spec.open(f"bench-waiter-{spec.kind}-{os.getpid()}")
    try:
        if not ready.wait(60):
            raise RuntimeError(f"{spec.kind}: the crash-test holder did not take the lock")
        lock = waiter.lock(name)
        got: dict[str, Any] = {}

        def wait_for_lock() -> None:
            try:
                got["ok"] = lock.acquire(blocking=lease_ttl * 3 + 10)
            except Exception as exc:  # stock tooz can raise tenacity's RetryError instead of returning False
                got["error"] = repr(exc)
            got["at"] = time.monotonic()

        thread = threading.Thread(target=wait_for_lock, daemon=True)
        thread.start()
        time.sleep(WAITER_HEAD_START)
        signalled = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL if mode == KILL else signal.SIGTERM)
        thread.join(lease_ttl * 3 + 20)
        if not got.get("ok"):
            raise RuntimeError(f"{spec.kind}: the waiter never got the lock after {mode}: {got.get('error', '')}")
        lock.release()
        return got["at"] - signalled
    finally:
        waiter.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def run(specs: list[TargetSpec], lease_ttl: float) -> ScenarioResult:
    """Raises RuntimeError when a holder cannot take the lock or the waiter never gets it."""
    result = ScenarioResult(
        "crash",
        f"time until a waiter gets the lock after its holder dies or stops (TTL {lease_ttl:g} s for both)",
        params={"lease_ttl_s": lease_ttl},
    )
    for spec in specs:
        result.metrics[spec.kind] = {"lease_ttl_s": lease_ttl}
    for mode in (KILL, CLEAN):
        for spec in specs:  # interleaved: lockd, tooz, lockd, tooz
            result.metrics[spec.kind][f"{mode}_s"] = _recovery(spec, mode, lease_ttl)
    result.notes.append("clean stop = SIGTERM whose handler calls the coordinator's stop(), as a service stop does")
    return result
