"""A watching client on a test host, for tests/netfaults/test_silent_watch.py.

Usage: python -m tests.netfaults.silent_watch_child MODE SPEC_JSON

Modes:
  watch  a bare WatchHub to the member ``spec["member"]`` (HOST:PORT) with one watch on ``spec["key"]``.
         Prints {"event": "watching", "port": P} (P: the local port of the hub's socket), then one line per batch
         {"event": "put"} or {"event": "deleted"}. After the first stdin line (the parent's "the fault is on")
         it waits at most ``spec["budget"]`` more seconds and prints {"event": "ended", "outcome": "deleted" |
         "broken" | "timeout", "reason": ..., "at": wall time}.
  wait   a lockd waiter: EtcdClient on ``spec["url"]`` + Session + Mutex ``spec["name"]``, whose
         ``acquire(blocking=spec["budget"])`` runs in a thread. Prints {"event": "watching", "port": P} once the
         waiter's watch is open on the client's hub (P: that socket's local port), then {"event": "acquired",
         "ok": ..., "at": wall time, "session_alive": ..., "failures": requests that failed (each fails the
         client over), "endpoint": the client's member then}, releases and exits.

The ports are read from the hub's socket (private attributes): the parent silences exactly that connection.
Every line printed is one JSON object, flushed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from lockd.etcd.client import EtcdClient
from lockd.etcd.watch import StreamBroken, WatchHub
from lockd.lock import Mutex
from lockd.options import parse_backend_url
from lockd.session import Session


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def local_port(hub: WatchHub) -> int:
    return int(hub._ws.sock.getsockname()[1])


def run_watch(spec: dict[str, Any]) -> int:
    hub = WatchHub(0, f"ws://{spec['member']}/v3/watch", timeout=5.0)
    watch = hub.open(spec["key"].encode())
    emit(event="watching", port=local_port(hub))
    deadline: list[float] = []  # set when the parent says the fault is on

    def fault_on() -> None:
        sys.stdin.readline()
        deadline.append(time.monotonic() + float(spec["budget"]))

    threading.Thread(target=fault_on, daemon=True).start()
    outcome, reason = "timeout", ""
    try:
        while not deadline or time.monotonic() < deadline[0]:
            # Short slices, so the budget counts from the fault, not from the start.
            for batch in watch.batches(time.monotonic() + 0.5):
                kinds = {"deleted" if event.deleted else "put" for event in batch}
                for kind in sorted(kinds):
                    emit(event=kind)
                if "deleted" in kinds:
                    outcome = "deleted"
                    break
            if outcome == "deleted":
                break
    except StreamBroken as exc:
        outcome, reason = "broken", str(exc)
    emit(event="ended", outcome=outcome, reason=reason, at=time.time())
    hub.close()
    return 0


def run_wait(spec: dict[str, Any]) -> int:
    failures: list[int] = []
    client = EtcdClient(parse_backend_url(spec["url"]), on_failure=lambda: failures.append(1))
    session = Session(client, client.options.lease_ttl, "silent-watch-waiter")
    mutex = Mutex(spec["name"], lambda _deadline: session, "silent-watch-waiter")
    result: dict[str, Any] = {}

    def acquire() -> None:
        try:
            result.update(ok=mutex.acquire(blocking=float(spec["budget"])), at=time.time())
        except Exception as exc:  # reported, so the parent sees why rather than a silent child
            result.update(ok=False, error=repr(exc), at=time.time())

    waiter = threading.Thread(target=acquire, daemon=True)
    waiter.start()
    hub: WatchHub | None = None
    while waiter.is_alive() and hub is None:
        with client._hubs_lock:
            hub = next((h for h in client._hubs.values() if not h.closed and h.watching()), None)
        time.sleep(0.02)
    if hub is not None:
        emit(event="watching", port=local_port(hub))
    waiter.join()
    emit(
        event="acquired",
        session_alive=session.alive(),
        failures=len(failures),
        endpoint=client.endpoint_name(),
        **result,
    )
    if result.get("ok"):
        mutex.release()
    session.close()
    client.close()
    return 0


def main() -> int:
    mode, spec = sys.argv[1], json.loads(sys.argv[2])
    return {"watch": run_watch, "wait": run_wait}[mode](spec)


if __name__ == "__main__":
    sys.exit(main())
