"""A lock client in its own process, for tests that kill, stop or pause a holder.

Usage: python -m tests.worker URL NAME MODE [OPTIONS as JSON]

Modes:
  hold      acquire, print {"event": "acquired", "token": T}, then hold until stdin closes or a signal;
            on stdin EOF release and print {"event": "released", "ok": bool}.
  contend   loop ``cycles`` times: acquire, append an interval record to ``history`` (JSONL), do a
            read-sleep-write increment of the ``counter`` file (lost updates show a broken lock), release.

Every line printed is one JSON object, flushed, so the parent can wait for events with a deadline.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import tooz.coordination


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def increment(counter: Path, hold: float) -> None:
    value = int(counter.read_text() or "0") if counter.exists() else 0
    time.sleep(hold)
    counter.write_text(str(value + 1))


def main() -> int:
    url, name, mode = sys.argv[1:4]
    opts: dict[str, Any] = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    member = opts.get("member", f"worker-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    coord = tooz.coordination.get_coordinator(url, member.encode())
    coord.start(start_heart=True)
    lock = coord.get_lock(name.encode())
    if mode == "hold":
        ok = lock.acquire(blocking=opts.get("blocking", True))
        emit(event="acquired" if ok else "not-acquired", token=getattr(lock, "token", None), pid=os.getpid())
        sys.stdin.read()
        still = lock.is_still_owner() if hasattr(lock, "token") else None
        emit(event="released", still_owner=still, ok=lock.release())
    elif mode == "contend":
        history = Path(opts["history"])
        counter = Path(opts["counter"])
        for _ in range(int(opts.get("cycles", 20))):
            lock.acquire()
            start = time.time()
            token = getattr(lock, "token", None)
            increment(counter, float(opts.get("hold", 0.001)))
            end = time.time()
            lock.release()
            with history.open("a") as f:
                f.write(json.dumps({"member": member, "start": start, "end": end, "token": token}) + "\n")
        emit(event="done")
    else:
        emit(event="error", error=f"unknown mode {mode}")
        return 2
    coord.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
