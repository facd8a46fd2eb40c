"""A process that takes locks in an order, for the deadlock tests (tests/integration/test_deadlocks.py).

Usage: python -m tests.deadlock_child URL SPEC_JSON

SPEC ``{"mode": "cross", "first": A, "second": B}``: take A, print {"event": "holding"}; on a line on stdin take
B (waiting as long as it takes, or ``"wait"`` seconds), print {"event": "got-second"} (or {"event": "gave-up"});
release both; print {"event": "done"}.
SPEC ``{"mode": "split", "first": A, "second": B}``: one thread takes A and prints {"event": "holding"}; then
another thread of the same process waits for B and prints {"event": "got-second"} when it has it; both release
when stdin closes. (A process that holds A in one thread while another thread waits: no cycle through it.)
SPEC ``{"mode": "churn", "first": A, "second": B, "threads": T, "seconds": S}``: print {"event": "ready"}, and on a
line on stdin start T threads, each with its own lock objects, for S seconds: even threads take A then B (always
in that order), odd threads take B alone; each holds for a moment and releases; then {"event": "done", "cycles":
N}. No cycle exists among threads, but as processes (a process holds A in one thread while another of its threads
holds B) there are cycles all the time: the false positives a wait-for graph of processes would report.
Every line printed is one JSON object, flushed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid

import tooz.coordination


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


def churn(coord: tooz.coordination.CoordinationDriver, spec: dict) -> int:
    """Run the churn threads (see the module doc); the number of lock cycles they made."""
    until = time.monotonic() + spec["seconds"]
    counts: list[int] = []

    def run(index: int) -> None:
        if spec.get("second") is None:  # every thread on the one name
            names = [spec["first"]]
        else:
            names = [spec["first"], spec["second"]] if index % 2 == 0 else [spec["second"]]
        locks = [coord.get_lock(name.encode()) for name in names]
        done = 0
        while time.monotonic() < until:
            for lock in locks:
                assert lock.acquire()
            time.sleep(0.002)
            for lock in reversed(locks):
                lock.release()
            done += 1
        counts.append(done)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(spec["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def main() -> int:
    url, spec = sys.argv[1], json.loads(sys.argv[2])
    coord = tooz.coordination.get_coordinator(url, f"deadlock-{uuid.uuid4().hex[:6]}".encode())
    coord.start(start_heart=True)
    if spec["mode"] == "churn":
        emit(event="ready")
        sys.stdin.readline()
        emit(event="done", cycles=churn(coord, spec))
        coord.stop()
        return 0
    first, second = coord.get_lock(spec["first"].encode()), coord.get_lock(spec["second"].encode())
    if spec["mode"] == "cross":
        assert first.acquire()
        emit(event="holding", token=first.token)
        sys.stdin.readline()
        if second.acquire(blocking=spec.get("wait", True)):
            emit(event="got-second", token=second.token)
            second.release()
        else:
            emit(event="gave-up")
        first.release()
    else:
        held = threading.Event()
        done = threading.Event()

        def hold() -> None:
            assert first.acquire()
            emit(event="holding", token=first.token)
            held.set()
            done.wait()
            first.release()

        def wait() -> None:
            held.wait()
            assert second.acquire()
            emit(event="got-second", token=second.token)
            done.wait()
            second.release()

        threads = [threading.Thread(target=hold), threading.Thread(target=wait)]
        for t in threads:
            t.start()
        sys.stdin.read()
        done.set()
        for t in threads:
            t.join()
    emit(event="done")
    coord.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
