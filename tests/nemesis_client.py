"""One client process of a nemesis run (tests/nemesis.py): threads that lock, write fenced statuses, release.

Usage: python -m tests.nemesis_client SPEC_JSON   (run on a test host, inside its network namespace)

SPEC: ``system`` ("lockd" or "stock"), ``url`` (the backend URL), ``names`` (lock names), ``threads``,
``sql_url`` (the SQL status store), ``history`` (a JSONL file), ``acquire_timeout``, ``process`` (its label),
``seed``.

Each thread loops until stdin closes: pick a name, acquire it (``blocking=acquire_timeout``), read and
compare-and-set the resource's status in the etcd store and the SQL store, each fenced with the lock (lockd)
or unfenced (stock tooz has no token), release. Every step is appended to the history as one JSON line the
moment it ends, so a process paused or killed mid-run loses nothing it finished:

  acquire  {start, end, ok, token, error}     token: lockd's fencing token; for stock tooz the lock key's
                                              create_revision read right after (what a token would have been)
  write    {start, end, store, token, ok, reason, error}
  release  {start, end, ok, valid_until, error}   valid_until: when lockd's own lease deadline ran out (a
                                              holder that lost its lease stops believing it holds there)
  lost     {at}                               lockd told the holder (on_lost callback) that its lease is gone
  ready    {} (once per thread, when it is about to start looping)

Every record also carries ``endpoint``, the etcd member the process was talking to when it was written
(lockd's client fails over among its endpoints; stock tooz stays on the one in its URL), so a lost lease can
be laid against what happened to that member (tests/planned.py).

Errors are recorded, never fatal: a thread that met an unreachable etcd tries again after a short pause, so
"works again after the heal without a restart" can be checked from the history.
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tooz.coordination

from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url
from lockd.status.store import open_store


class History:
    """Append-only JSONL, one line per finished step, flushed at once."""

    def __init__(self, path: Path, process: str, endpoint: Callable[[], str] = str) -> None:
        """``endpoint`` says which member the process talks to now (read at each record)."""
        self._file = path.open("a", buffering=1)
        self._lock = threading.Lock()
        self.process = process
        self.endpoint = endpoint

    def write(self, client: str, op: str, **fields: Any) -> None:
        record = {"process": self.process, "client": client, "op": op, "endpoint": self.endpoint(), **fields}
        line = json.dumps(record)
        with self._lock:
            self._file.write(line + "\n")


def lease_deadline(lock: Any) -> float | None:
    """Wall-clock moment lockd's session stopped (or stops) being confirmed; None for stock tooz."""
    session = getattr(lock, "session", None)
    if session is None:
        return None
    return time.time() - (time.monotonic() - session.confirmed_until)


class Client(threading.Thread):
    def __init__(self, spec: dict[str, Any], index: int, coord: Any, stores: dict[str, Any], history: History):
        super().__init__(name=f"client-{index}", daemon=True)
        self.spec, self.coord, self.stores, self.history = spec, coord, stores, history
        self.id = f"{spec['process']}.{index}"
        self.rng = random.Random(f"{spec['seed']}-{self.id}")
        self.locks = {name: coord.get_lock(name.encode()) for name in spec["names"]}
        self.lockd = spec["system"] == "lockd"
        self.stop = threading.Event()
        # The control's "token": the lock key's create_revision, read on a side client (stock tooz has none).
        self.reader = None if self.lockd else EtcdClient(parse_backend_url(spec["reader_url"]))

    def run(self) -> None:
        self.history.write(self.id, "ready")
        while not self.stop.is_set():
            name = self.rng.choice(self.spec["names"])
            lock = self.locks[name]
            if self.cycle(name, lock) is None:
                time.sleep(0.2)  # etcd unreachable: try again, as a service's worker would

    def cycle(self, name: str, lock: Any) -> bool | None:
        """One acquire-write-release; None when an error (not a refusal) ended it."""
        start = time.time()
        try:
            ok = lock.acquire(blocking=self.spec["acquire_timeout"])
        except Exception as exc:  # noqa: BLE001 - every failure is history, the run goes on
            self.history.write(self.id, "acquire", name=name, start=start, end=time.time(), ok=False, error=repr(exc))
            return None
        token = lock.token if self.lockd else self.observed_token(name)
        self.history.write(self.id, "acquire", name=name, start=start, end=time.time(), ok=ok, token=token)
        if not ok:
            return False
        if self.lockd:
            lock.on_lost(lambda: self.history.write(self.id, "lost", name=name, token=token, at=time.time()))
        for store in ("etcd", "sql"):
            self.write(store, name, lock, token)
            time.sleep(self.rng.uniform(0.01, 0.05))  # work under the lock
        start, valid_until = time.time(), lease_deadline(lock)
        try:
            released, error = lock.release(), None
        except Exception as exc:  # noqa: BLE001
            released, error = False, repr(exc)
        self.history.write(
            self.id,
            "release",
            name=name,
            start=start,
            end=time.time(),
            ok=released,
            token=token,
            valid_until=valid_until,
            error=error,
        )
        return error is None

    def observed_token(self, name: str) -> int | None:
        try:
            kv = self.reader.get(keys.lock_key(name)) if self.reader else None
        except Exception:  # noqa: BLE001 - partitioned right after acquiring: no token for this hold
            return None
        return kv.create_revision if kv else None

    def write(self, store: str, name: str, lock: Any, token: int | None) -> None:
        start = time.time()
        status = f"{self.id}-{start:.6f}"
        try:
            current = self.stores[store].get_record("volume", name)
            expected = [current[0] if current else None]
            result = self.stores[store].compare_and_set(
                "volume", name, expected, status, fence=lock if self.lockd else None
            )
            outcome = {"ok": result.ok, "reason": result.reason}
        except Exception as exc:  # noqa: BLE001
            outcome = {"ok": False, "error": repr(exc)}
        self.history.write(
            self.id,
            "write",
            name=name,
            store=store,
            start=start,
            end=time.time(),
            token=token,
            status=status,
            **outcome,
        )


def member_of(coord: Any, url: str) -> str:
    """``http://HOST:PORT`` of the member the coordinator talks to now: lockd's current endpoint (it moves on
    failover), stock tooz's one and only."""
    etcd = getattr(coord, "etcd", None)
    if etcd is not None:
        return etcd.endpoint_name()
    parsed = urllib.parse.urlsplit(url)
    return f"http://{parsed.hostname}:{parsed.port}"


def main() -> int:
    spec = json.loads(sys.argv[1])
    # SIGUSR1 dumps every thread's stack next to the history: tests/nemesis.py sends it to a client that does not
    # stop, before killing it, so what it was stuck in is kept.
    faulthandler.register(signal.SIGUSR1, file=open(spec["history"] + ".stacks", "a"), all_threads=True)
    coord = tooz.coordination.get_coordinator(spec["url"], f"{spec['process']}-{os.getpid()}".encode())
    history = History(Path(spec["history"]), spec["process"], lambda: member_of(coord, spec["url"]))
    coord.start(start_heart=True)
    # The etcd store rides on the coordinator's own client (its failover) for lockd; the control gets a plain one.
    etcd = getattr(coord, "etcd", None) or EtcdClient(parse_backend_url(spec["reader_url"]))
    stores = {"etcd": open_store(None, etcd_client=etcd), "sql": open_store(spec["sql_url"])}
    clients = [Client(spec, i, coord, stores, history) for i in range(spec["threads"])]
    for client in clients:
        client.start()
    print(json.dumps({"event": "started", "pid": os.getpid()}), flush=True)
    sys.stdin.read()  # the run's end
    for client in clients:
        client.stop.set()
    for client in clients:
        client.join(timeout=60)
    stuck = [c.id for c in clients if c.is_alive()]
    if not stuck:
        coord.stop()
    print(json.dumps({"event": "done", "stuck": stuck}), flush=True)
    os._exit(0)  # a thread stuck in a call must not keep the process: that is reported, not waited for


if __name__ == "__main__":
    sys.exit(main())
