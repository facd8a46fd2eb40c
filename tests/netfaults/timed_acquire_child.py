"""A lock client on a test host that makes one timed acquire on the parent's word, for
tests/netfaults/test_timed_acquire_cut_off.py.

Usage: python -m tests.netfaults.timed_acquire_child SPEC_JSON   (``url``, ``name``, ``wait``)

A tooz coordinator on ``spec["url"]`` (the lockd backend, as Cinder makes it), warmed by one acquire and release
of another name. Prints {"event": "ready", "lease": L}. Then, per stdin line:
  "acquire"  prints {"event": "started"} and runs ``acquire(blocking=spec["wait"])`` on ``spec["name"]``, then
             {"event": "acquired", "ok": ..., "took": seconds} or {"event": "acquired", "error": type,
             "message": ..., "took": seconds};
  "release"  releases it: {"event": "released", "ok": ...} or {"event": "released", "error": ...};
  "session"  {"event": "session", "lease": the live session's lease id, or null}.
Every line printed is one JSON object, flushed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import tooz.coordination


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def main() -> int:
    spec = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(relativeCreated)d %(threadName)s %(message)s")
    coordinator = tooz.coordination.get_coordinator(spec["url"], b"timed-acquire-child")
    coordinator.start(start_heart=True)
    warm = coordinator.get_lock(f"{spec['name']}-warm")
    assert warm.acquire(blocking=True) and warm.release()
    lock = coordinator.get_lock(spec["name"])
    emit(event="ready", lease=coordinator.session().lease_id)
    for line in sys.stdin:
        command = line.strip()
        if command == "acquire":
            emit(event="started")
            logging.getLogger("timed_acquire_child").info("acquire(blocking=%s) starts", spec["wait"])
            started = time.monotonic()
            try:
                ok = lock.acquire(blocking=float(spec["wait"]))
            except Exception as exc:  # reported, so the parent can tell a raise from a False
                emit(event="acquired", error=type(exc).__name__, message=str(exc), took=time.monotonic() - started)
            else:
                emit(event="acquired", ok=ok, took=time.monotonic() - started)
        elif command == "release":
            try:
                emit(event="released", ok=lock.release())
            except Exception as exc:
                emit(event="released", error=type(exc).__name__, message=str(exc))
        elif command == "session":
            session = coordinator._session  # the live one, if any: asking for one would start a new session
            emit(event="session", lease=session.lease_id if session is not None and session.alive() else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
