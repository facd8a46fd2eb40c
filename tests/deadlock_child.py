"""A process that takes locks in an order, for the deadlock tests (tests/integration/test_deadlocks.py).

Usage: python -m tests.deadlock_child URL SPEC_JSON

SPEC ``{"mode": "cross", "first": A, "second": B}``: take A, print {"event": "holding"}; on a line on stdin take
B (waiting as long as it takes, or ``"wait"`` seconds), print {"event": "got-second"} (or {"event": "gave-up"});
release both; print {"event": "done"}.
SPEC ``{"mode": "split", "first": A, "second": B}``: one thread takes A and prints {"event": "holding"}; then
another thread of the same process waits for B and prints {"event": "got-second"} when it has it; both release
when stdin closes. (A process that holds A in one thread while another thread waits: no cycle through it.)
Every line printed is one JSON object, flushed.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid

import tooz.coordination


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


def main() -> int:
    url, spec = sys.argv[1], json.loads(sys.argv[2])
    coord = tooz.coordination.get_coordinator(url, f"deadlock-{uuid.uuid4().hex[:6]}".encode())
    coord.start(start_heart=True)
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
