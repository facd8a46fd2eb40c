"""A lock client in its own process, for tests that kill, stop or pause a holder.

Usage: python -m tests.worker URL NAME MODE [OPTIONS as JSON]

Modes:
  hold      acquire, print {"event": "acquired", "token": T}, then hold until stdin closes or a signal;
            on stdin EOF release and print {"event": "released", "ok": bool}.
            With ``history`` the hold is appended there too (``valid_until``: when the client's own lease
            deadline ran out, lockd only); with ``fenced_write`` ({"kind", "id", "expected", "new",
            "fences"}) lockd.status.compare_and_set is tried before the release, once per way of fencing
            named in ``fences`` (see fenced_write).
  sync      the same through drivers_shim.synchronized: the guarded function waits for stdin EOF, then
            prints {"event": "resumed", ...}; afterwards {"event": "returned"} or {"event": "lock-lost"}.
  contend   loop ``cycles`` times: acquire, append an interval record to ``history`` (JSONL), do a
            read-sleep-write increment of the ``counter`` file (lost updates show a broken lock), release;
            in ``threads`` threads (default 1), each with its own lock object on the name.
            An acquire or release that raises a connection error (etcd failing over) is counted and retried.

Every line printed is one JSON object, flushed, so the parent can wait for events with a deadline.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import tooz.coordination
from tooz.coordination import ToozConnectionError


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def increment(counter: Path, hold: float) -> None:
    value = int(counter.read_text() or "0") if counter.exists() else 0
    time.sleep(hold)
    counter.write_text(str(value + 1))


def lease_deadline(lock: Any) -> float | None:
    """Wall-clock time at which a lockd lock's session stopped (or stops) being confirmed; None for stock tooz."""
    session = getattr(lock, "session", None)
    if session is None:
        return None
    return time.time() - (time.monotonic() - session.confirmed_until)


def fenced_write(lock: Any, token: int | None, spec: dict[str, Any] | None) -> dict[str, Any]:
    """Try lockd.status.compare_and_set fenced each way a holder may fence: with the lock object (``lock``),
    with ``lock.token`` read now (``lock.token``), and with the token it read at acquisition (``token``).

    Returns ``write_ok`` (did any land) and ``writes``: per fence, the store's answer.
    """
    if not spec:
        return {}
    import lockd.status

    writes = {}
    for how in spec.get("fences", ["lock"]):
        fence = {"lock": lock, "lock.token": getattr(lock, "token", None), "token": token}[how]
        result = lockd.status.compare_and_set(spec["kind"], spec["id"], spec["expected"], spec["new"], fence=fence)
        writes[how] = {"ok": bool(result.ok), "current": result.current, "reason": result.reason}
    return {"write_ok": any(w["ok"] for w in writes.values()), "writes": writes}


def record_hold(opts: dict[str, Any], member: str, name: str, start: float, token: int | None, lock: Any) -> None:
    """Append the hold [acquired, now] to the history, with the lock's own validity deadline (lockd only)."""
    if opts.get("history"):
        rec = {"member": member, "name": name, "start": start, "end": time.time(), "token": token}
        rec["valid_until"] = lease_deadline(lock)
        with Path(opts["history"]).open("a") as f:
            f.write(json.dumps(rec) + "\n")


def run_sync(url: str, name: str, member: str, opts: dict[str, Any]) -> int:
    import drivers_shim
    from drivers_shim.synchronized import held_locks
    from lockd import runtime

    drivers_shim.configure(backend_url=url, prefix="", member_id=member, status_url=opts.get("status_url"))

    @drivers_shim.synchronized(name)
    def guarded() -> None:
        lock = held_locks.get()[-1]
        start, token = time.time(), lock.token
        emit(event="acquired", token=token, pid=os.getpid())
        sys.stdin.read()
        still, held = lock.is_still_owner(), lock.acquired
        written = fenced_write(lock, token, opts.get("fenced_write"))
        record_hold(opts, member, name, start, token, lock)
        emit(event="resumed", still_owner=still, held=held, **written)

    try:
        guarded()
        emit(event="returned")
    except drivers_shim.LockLost as exc:
        emit(event="lock-lost", error=str(exc))
    runtime.stop()
    return 0


def contend(coord: Any, name: str, member: str, opts: dict[str, Any]) -> None:
    """The ``contend`` mode: ``threads`` threads (default 1), each with a lock object of its own on ``name``."""
    history, counter = Path(opts["history"]), Path(opts["counter"])
    errors: list[str] = []
    write = threading.Lock()

    def cycle(lock: Any) -> None:
        while True:
            try:
                lock.acquire()
                break
            except ToozConnectionError as exc:
                errors.append(f"acquire: {exc}")
        start = time.time()
        token = getattr(lock, "token", None)
        increment(counter, float(opts.get("hold", 0.001)))
        end = time.time()
        try:
            lock.release()
        except ToozConnectionError as exc:
            errors.append(f"release: {exc}")
        with write, history.open("a") as f:
            f.write(json.dumps({"member": member, "name": name, "start": start, "end": end, "token": token}) + "\n")

    def loop() -> None:
        lock = coord.get_lock(name.encode())
        for _ in range(int(opts.get("cycles", 20))):
            cycle(lock)

    threads = [threading.Thread(target=loop) for _ in range(int(opts.get("threads", 1)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emit(event="done", errors=errors)


def main() -> int:
    url, name, mode = sys.argv[1:4]
    opts: dict[str, Any] = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    member = opts.get("member", f"worker-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    if url.startswith("lockd+") and opts.get("fenced_write"):
        os.environ.setdefault("LOCKD_BACKEND_URL", url)  # lockd.status's default store sits next to the locks
    if mode == "sync":
        return run_sync(url, name, member, opts)
    coord = tooz.coordination.get_coordinator(url, member.encode())
    coord.start(start_heart=True)
    lock = coord.get_lock(name.encode())
    if mode == "hold":
        ok = lock.acquire(blocking=opts.get("blocking", True))
        start, token = time.time(), getattr(lock, "token", None)
        emit(event="acquired" if ok else "not-acquired", token=token, pid=os.getpid())
        sys.stdin.read()
        if opts.get("exit_holding"):
            return 0  # leave without release() or stop(): only interpreter-exit hooks can free the lock
        still = lock.is_still_owner() if hasattr(lock, "token") else None
        believed = bool(lock.acquired)
        written = fenced_write(lock, token, opts.get("fenced_write")) if ok else {}
        if ok:
            record_hold(opts, member, name, start, token, lock)
        emit(event="released", still_owner=still, held=believed, ok=lock.release(), **written)
    elif mode == "contend":
        contend(coord, name, member, opts)
    else:
        emit(event="error", error=f"unknown mode {mode}")
        return 2
    coord.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
