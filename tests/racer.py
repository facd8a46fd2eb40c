"""One racing process: many threads (or eventlet green threads) that race a status change or a lock, by rounds.

Usage: python -m tests.racer CONFIG_JSON

CONFIG: ``runtime`` "threads" or "eventlet" (then ``eventlet.monkey_patch()`` runs first, as cinder does),
``threads`` per process, ``scenario`` (below), ``rounds``, ``kind``, ``ids`` (one resource id per round),
``backend_url`` (the lock backend), ``status_url`` (None = etcd next to the locks), and per scenario:

  cas         each thread: lockd.status.compare_and_set(kind, id, ["available"], "deleting")
  transition  each thread calls one function decorated with drivers_shim.transition(expected available,
              pending deleting, success deleted); the result says whether its body ran
  counter     each thread: ``increments`` times, under drivers_shim.synchronized(lock name ``ids[round]``):
              read the integer in file ``counter_dir/ids[round]``, yield, write it back plus one
  oslo_counter  the same under oslo's ``lockutils.synchronized(ids[round], "cinder-", external=True,
              lock_path=lock_path)``, in a process patched (``patch_lockutils``: true) or not, as the config says

Per round, on stdout/stdin (one JSON object per line):
  -> {"event": "ready", "round": r}   every thread has warmed up (read the status, or taken and released the
                                      lock once: connections open, caches filled) and waits on one event
  <- "go"                             the parent says go to every process at once; the event fires
  -> {"event": "done", "round": r, "results": [...]}   one result per thread
"""

from __future__ import annotations

import json
import sys

CONFIG = json.loads(sys.argv[1])
if CONFIG["runtime"] == "eventlet":
    import eventlet

    eventlet.monkey_patch()

import os  # noqa: E402  (after monkey_patch, as in cinder's entry points)
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import drivers_shim  # noqa: E402
import lockd.status  # noqa: E402
from lockd import runtime  # noqa: E402


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def cas(kind: str, vid: str) -> dict[str, Any]:
    result = lockd.status.compare_and_set(kind, vid, ["available"], "deleting")
    return {"ok": result.ok, "current": result.current, "reason": result.reason}


def make_transition(kind: str) -> Any:
    @drivers_shim.transition(
        kind=kind, id="{vid}", expected=("available",), pending="deleting", success="deleted", failure="error_deleting"
    )
    def delete(vid: str) -> str:
        time.sleep(0.001)  # a driver call: yields to other green threads
        return "ran"

    def attempt(vid: str) -> dict[str, Any]:
        try:
            return {"ran": delete(vid) == "ran"}
        except drivers_shim.TransitionConflict as exc:
            return {"ran": False, "current": exc.current, "reason": exc.reason}

    return attempt


def increment(path: Path) -> None:
    """Read the integer in ``path``, yield, write it back plus one: loses updates unless a lock excludes."""
    value = int(path.read_text() or "0") if path.exists() else 0
    time.sleep(0)  # give every other contender its chance to interleave
    path.write_text(str(value + 1))


def make_counter(counter_dir: Path, increments: int) -> Any:
    @drivers_shim.synchronized("{name}")
    def bump(name: str) -> None:
        increment(counter_dir / name)

    def attempt(name: str) -> dict[str, Any]:
        for _ in range(increments):
            bump(name)
        return {"increments": increments}

    return attempt


def make_oslo_counter(counter_dir: Path, increments: int, lock_path: str) -> Any:
    from oslo_concurrency import lockutils

    def attempt(name: str) -> dict[str, Any]:
        for _ in range(increments):
            with lockutils.lock(name, "cinder-", external=True, lock_path=lock_path):
                increment(counter_dir / name)
        return {"increments": increments, "external_lock": lockutils.external_lock.__module__}

    return attempt


def warm(scenario: str, kind: str, rid: str) -> None:
    """Open this thread's connection and fill caches the way a long-running service already has."""
    if scenario == "oslo_counter":
        from oslo_concurrency import lockutils

        with lockutils.lock(f"warm-{rid}", "cinder-", external=True, lock_path=CONFIG["lock_path"]):
            pass
    elif scenario == "counter":
        lock = runtime.get_lock(f"warm-{rid}")
        lock.acquire()
        lock.release()
    else:
        lockd.status.get(kind, rid)


def wait_for_go() -> bool:
    if CONFIG["runtime"] == "eventlet":  # wait for the line green, so the session keepalive goes on
        from eventlet.hubs import trampoline

        trampoline(sys.stdin.fileno(), read=True)
    return sys.stdin.readline().strip() == "go"


def race_round(rnd: int, rid: str, warm_up: Callable[[str], None], work: Callable[[str], Any]) -> list[Any] | None:
    """Warm every thread, say ready, and on "go" release them all at once; their results (None: no go)."""
    go = threading.Event()
    warmed = threading.Semaphore(0)
    results: list[dict[str, Any]] = []

    def contender() -> None:
        try:
            warm_up(rid)
        except Exception as exc:  # report, never hang the round
            results.append({"error": f"warm: {exc!r}"})
            return
        finally:
            warmed.release()
        go.wait()
        try:
            results.append(work(rid))
        except Exception as exc:
            results.append({"error": repr(exc)})

    threads = [threading.Thread(target=contender) for _ in range(int(CONFIG["threads"]))]
    for t in threads:
        t.start()
    for _ in threads:
        warmed.acquire()
    emit(event="ready", round=rnd)
    if not wait_for_go():
        go.set()
        return None
    go.set()
    for t in threads:
        t.join()
    return results


def main() -> int:
    drivers_shim.configure(
        backend_url=CONFIG["backend_url"],
        prefix="",
        member_id=f"racer-{os.getpid()}",
        status_url=CONFIG.get("status_url"),
    )
    scenario, kind = CONFIG["scenario"], CONFIG["kind"]
    if scenario == "cas":

        def work(rid: str) -> dict[str, Any]:
            return cas(kind, rid)
    elif scenario == "transition":
        work = make_transition(kind)
    elif scenario == "counter":
        work = make_counter(Path(CONFIG["counter_dir"]), int(CONFIG["increments"]))
    elif scenario == "oslo_counter":
        if CONFIG["patch_lockutils"]:
            drivers_shim.patch_lockutils(host_local=[])
        work = make_oslo_counter(Path(CONFIG["counter_dir"]), int(CONFIG["increments"]), CONFIG["lock_path"])
    else:
        emit(event="error", error=f"unknown scenario {scenario}")
        return 2

    for rnd in range(int(CONFIG["rounds"])):
        results = race_round(rnd, CONFIG["ids"][rnd], lambda rid: warm(scenario, kind, rid), work)
        if results is None:
            return 1
        emit(event="done", round=rnd, results=results)
    runtime.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
