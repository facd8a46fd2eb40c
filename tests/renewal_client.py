"""A long-lived lock client for certificate-renewal tests: it must ride through the renewal without a restart.

Usage: python -m tests.renewal_client CONFIG_JSON

CONFIG: ``url`` (a lockd+etcd3+https URL with ca_cert, cert_cert, cert_key), ``role``, ``name`` (the lock),
``member``, and per role:

  hold     acquire ``name`` once and keep it; ``on_lost`` reports a lost lease at once ({"event": "lost"}).
           stdin "check" -> {"event": "check", "still_owner", "held", "lost", "lease", "token"} (still_owner asks
           etcd, so it needs a working connection); stdin EOF -> a last check, release, {"event": "released"}.
  contend  ``threads`` threads, each with its own lock object for ``name`` on one coordinator, loop: acquire
           (blocking), read-sleep(``hold``)-write the integer in file ``counter``, release. An exception from a
           lock call is recorded with its wall time (the test wants none, or none outside etcd's downtime when
           the only member restarts) and the loop goes on.
           stdin "progress" -> {"event": "progress", "increments", "errors"}; stdin EOF -> the threads finish
           their round and {"event": "done", "increments", "errors", "leases" (distinct session leases seen),
           "max_gap" (longest time between two increments, seconds)}.

Both report ``pid`` and ``tls_loads`` (how many times the client loaded its TLS files, when it says).
Logs (lockd's warnings, and its TLS reload notices) go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import tooz.coordination


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps({**event, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()


def tls_loads(coord: Any) -> int | None:
    tls = getattr(getattr(coord, "etcd", None), "tls", None)
    return getattr(tls, "loads", None)


def hold(config: dict[str, Any]) -> None:
    coord = tooz.coordination.get_coordinator(config["url"], config["member"].encode())
    coord.start(start_heart=True)
    lock = coord.get_lock(config["name"].encode())
    assert lock.acquire(), "the holder could not take its lock"
    lost: list[float] = []

    def on_lost() -> None:
        lost.append(time.time())
        emit(event="lost")

    lock.on_lost(on_lost)
    emit(event="acquired", token=lock.token, lease=lock.session.lease_id)

    def check(event: str) -> None:
        session = lock.session
        emit(
            event=event,
            still_owner=lock.is_still_owner(),
            held=lock.acquired,
            lost=len(lost),
            lease=session.lease_id if session is not None else None,
            token=lock.token,
            tls_loads=tls_loads(coord),
        )

    for line in sys.stdin:
        if line.strip() == "check":
            check("check")
    check("check")
    emit(event="released", ok=lock.release())
    coord.stop()


def contend(config: dict[str, Any]) -> None:
    coord = tooz.coordination.get_coordinator(config["url"], config["member"].encode())
    coord.start(start_heart=True)
    counter = Path(config["counter"])
    pause = float(config.get("hold", 0.005))
    stop = threading.Event()
    mutex = threading.Lock()
    increments = [0]
    errors: list[list[Any]] = []  # [wall time, what]
    leases: set[int] = set()
    last = [time.monotonic(), 0.0]  # time of the latest increment, longest gap between two

    def run() -> None:
        lock = coord.get_lock(config["name"].encode())
        while not stop.is_set():
            try:
                lock.acquire()
            except Exception as exc:  # the test wants none; record it and go on, so every one is counted
                with mutex:
                    errors.append([time.time(), f"acquire: {type(exc).__name__}: {exc}"])
                continue
            value = int(counter.read_text() or "0") if counter.exists() else 0
            time.sleep(pause)
            counter.write_text(str(value + 1))
            with mutex:
                increments[0] += 1
                leases.add(lock.session.lease_id)
                now = time.monotonic()
                last[:] = [now, max(last[1], now - last[0])]
            try:
                if not lock.release():
                    with mutex:
                        errors.append([time.time(), "release: the lock was no longer ours"])
            except Exception as exc:
                with mutex:
                    errors.append([time.time(), f"release: {type(exc).__name__}: {exc}"])

    threads = [threading.Thread(target=run, name=f"contender-{i}") for i in range(int(config.get("threads", 3)))]
    for thread in threads:
        thread.start()
    emit(event="started")
    for line in sys.stdin:
        if line.strip() == "progress":
            with mutex:
                emit(event="progress", increments=increments[0], errors=len(errors), tls_loads=tls_loads(coord))
    stop.set()
    for thread in threads:
        thread.join()
    emit(
        event="done",
        increments=increments[0],
        errors=errors,
        leases=len(leases),
        max_gap=round(last[1], 3),
        tls_loads=tls_loads(coord),
    )
    coord.stop()


def main() -> int:
    config = json.loads(sys.argv[1])
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("lockd.etcd.tls").setLevel(logging.INFO)
    {"hold": hold, "contend": contend}[config["role"]](config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
