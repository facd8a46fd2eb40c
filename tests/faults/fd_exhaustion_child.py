"""A holder whose process runs out of file descriptors, for tests/faults/test_descriptor_exhaustion.py.

Usage: python -m tests.faults.fd_exhaustion_child URL NAME SECONDS

1. Take NAME; print {"event": "held", "token": T}.
2. Lower the soft descriptor limit to 256 and open /dev/null until the process has none left;
   print {"event": "exhausted", "filled": N}.
3. Wait for a line on stdin (the parent restarts etcd meanwhile, so every kept-alive connection is dead and the
   session's keepalive must open a new one with no descriptor free).
4. For SECONDS (several lease TTLs), try once a second to take NAME through a second lock object, which must
   queue behind the first and so needs a watch, hence a socket; print each outcome:
   {"event": "acquire", "ok": bool} or {"event": "acquire", "error": TYPE, "message": ...}.
5. Print {"event": "after", "held": lock.acquired, "lost": session lost?}; wait for a line on stdin (the parent
   reads the lock key meanwhile); free the descriptors; print
   {"event": "end", "still_owner": is_still_owner(), "released": release()}.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import uuid
from typing import Any

import tooz.coordination


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def fill_descriptors() -> list[int]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    filled = []
    while True:
        try:
            filled.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            return filled


def main(url: str, name: str, seconds: float) -> None:
    coord = tooz.coordination.get_coordinator(url, f"fd-{uuid.uuid4().hex[:6]}".encode())
    coord.start(start_heart=True)
    lock = coord.get_lock(name)
    assert lock.acquire(blocking=5)
    emit(event="held", token=lock.token)
    filled = fill_descriptors()
    emit(event="exhausted", filled=len(filled))
    sys.stdin.readline()
    other = coord.get_lock(name)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            ok = other.acquire(blocking=1)
            emit(event="acquire", ok=ok)
            if ok:
                other.release()
        except Exception as exc:  # what a caller sees is the point: report it, never raise
            emit(event="acquire", error=type(exc).__name__, message=str(exc))
        time.sleep(1)
    emit(event="after", held=lock.acquired, lost=lock.session is None or lock.session.lost.is_set())
    sys.stdin.readline()  # the parent reads the lock key from etcd now, before the release below
    for fd in filled:
        os.close(fd)
    emit(event="end", still_owner=lock.is_still_owner(), released=lock.release())
    coord.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
