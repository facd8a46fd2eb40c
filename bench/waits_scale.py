"""``GET /v1/waits`` with 10,000 locks held and 10,000 waiters (not a test; the figure for docs/benchmarks.md).

Floor (issue 26): p50 <= 50 ms, in each of the three conditions below (waiters that move included).

Setup, all on loopback: a private etcd (lockd.embedded), `lockd serve` as a subprocess watching it, and the
lock state written straight into etcd, in the lockd protocol's layout and values (lockd.etcd.keys, the holder
values lockd.lock writes): ``--locks`` lock keys, each naming a holder thread (100 processes' worth), and one
queue entry per lock naming a waiting thread of another process. Written rather than taken through the protocol
because 10,000 blocked ``acquire()`` calls would need 10,000 threads (or processes) waiting, which this 2-core
machine cannot hold while measuring; the sidecar cannot tell the difference: it reads the same keys and values
through its watch, and the graph it draws (an edge per waiter, from the waiting thread to the holding one) is the
one real waiters would give. 200 txns of 100 puts take a few seconds. All keys share one lease, revoked at the end.

Then ``--calls`` requests of ``GET /v1/waits`` on one keep-alive connection, in three conditions:

  unchanged   the lock state does not move between calls (the answer kept with the graph serves);
  moved       before each call a key the view watches but no edge depends on is written (a status key, as a
              free lock taken or released would be): the revision moves, no lock's edges change, and the graph
              the view keeps (lockd.api.waits.KeptGraph) and its answer stay as they were;
  edge        before each call one more waiter queues on a lock (or leaves it again), so an edge and an owner
              come or go: the view draws that lock's edges again, and the answer is joined anew from the JSON
              kept per lock and per owner, only that lock's and that owner's made afresh: the cost under churn
              of the waiters themselves.

    .venv/bin/python bench/waits_scale.py [--locks 10000] [--calls 50] [--tree DIR]

``--tree`` runs the sidecar from another source tree (e.g. ``git archive`` of an older commit), for before/after.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_load import free_port, wait_until  # noqa: E402

from lockd.embedded import EmbeddedEtcd  # noqa: E402
from lockd.etcd import keys  # noqa: E402
from lockd.etcd.client import EtcdClient, op_put  # noqa: E402
from lockd.options import parse_backend_url  # noqa: E402

FLOOR_P50_MS = 50.0
PROCESSES = 100  # holders are threads of this many processes; waiters are threads of as many others
BATCH = 100  # puts per txn (etcd allows 128 by default)


def holder_value(process: int, thread: int, waiter: str, now: float) -> bytes:
    """A lock key's (or queue entry's) value as lockd.lock writes it: who, where, which thread, which waiter id."""
    return json.dumps(
        {"member": f"bench-node{process}", "host": f"host{process % 10}", "pid": 10_000 + process,
         "acquired_at": now, "waiter": waiter, "thread": thread},
        separators=(",", ":"),
    ).encode()  # fmt: skip


def fill(client: EtcdClient, count: int, lease: int) -> None:
    """``count`` held locks, each with one waiter of another process (see the module doc)."""
    now = time.time()
    ops = []
    for i in range(count):
        name = f"bench-waits-{i:06d}"
        holder, waiter = i % PROCESSES, PROCESSES + i % PROCESSES
        ops.append(op_put(keys.lock_key(name), holder_value(holder, 1_000_000 + i, f"h{i:06d}", now), lease))
        ops.append(
            op_put(keys.queue_key(name, f"w{i:06d}"), holder_value(waiter, 2_000_000 + i, f"w{i:06d}", now), lease)
        )
        if len(ops) >= BATCH:
            client.txn([], ops)
            ops = []
    if ops:
        client.txn([], ops)


def moved(client: EtcdClient, i: int, lease: int) -> None:
    """A write the view sees that changes no edge."""
    client.txn([], [op_put(keys.status_key("bench", "tick"), str(i).encode())])


def edge(client: EtcdClient, i: int, lease: int) -> None:
    """One more waiter on lock 0 on even calls, gone again on odd ones: an edge comes or goes each time."""
    key = keys.queue_key("bench-waits-000000", "w-extra")
    if i % 2 == 0:
        client.txn([], [op_put(key, holder_value(2 * PROCESSES, 3_000_000, "w-extra", time.time()), lease)])
    else:
        client.delete(key)


def get(conn: http.client.HTTPConnection, path: str) -> tuple[float, bytes]:
    sent = time.perf_counter()
    conn.request("GET", path)
    answer = conn.getresponse()
    body = answer.read()
    took = (time.perf_counter() - sent) * 1000
    assert answer.status == 200, (answer.status, body[:200])
    return took, body


def summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"p50_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--locks", type=int, default=10_000, help="locks held, each with one waiter")
    parser.add_argument("--calls", type=int, default=50, help="requests per condition")
    parser.add_argument("--tree", type=Path, help="run the sidecar from this source tree")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="lockd-waits-bench-"))
    embedded = EmbeddedEtcd(state / "etcd")
    backend_url = embedded.start()
    client = EtcdClient(parse_backend_url(backend_url))
    port = free_port()
    tree = (args.tree or Path(__file__).resolve().parent.parent).resolve()
    log = open(state / "serve.log", "wb")
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "lockd.cli.main", "serve", "--backend-url", backend_url, "--port", str(port)]
        + ["--log-level", "warning", "--state-dir", str(state / "serve")],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tree,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    results: dict[str, object] = {"cores": os.cpu_count(), "locks": args.locks, "waiters": args.locks}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

        def edges() -> int:
            try:
                return len(json.loads(get(conn, "/v1/waits")[1])["edges"])
            except (OSError, http.client.HTTPException, AssertionError):
                conn.close()
                return -1

        wait_until(lambda: edges() == 0, 60, "lockd serve to start")
        lease, _ = client.lease_grant(3600)
        started = time.monotonic()
        fill(client, args.locks, lease)
        results["fill_seconds"] = round(time.monotonic() - started, 1)
        wait_until(lambda: edges() == args.locks, 120, f"{args.locks} edges in /v1/waits")
        time.sleep(2.0)  # let the sidecar settle after the burst of watch events (and its deadlock check)

        times, body = [], b""
        for _ in range(args.calls):
            took, body = get(conn, "/v1/waits")
            times.append(took)
        results["unchanged"] = summary(times)
        results["bytes"] = len(body)

        for condition, change in (("moved", moved), ("edge", edge)):
            times = []
            for i in range(args.calls):
                change(client, i, lease)
                time.sleep(0.1)  # the watch delivers it well within this on loopback
                times.append(get(conn, "/v1/waits")[0])
            results[condition] = summary(times)
        conn.close()
        client.lease_revoke(lease)
    finally:
        sidecar.terminate()
        sidecar.wait(30)
        log.close()
        client.close()
        embedded.stop()
        shutil.rmtree(state, ignore_errors=True)  # etcd's data: ~20,000 keys' worth

    unchanged, same, changed = results["unchanged"], results["moved"], results["edge"]
    assert isinstance(unchanged, dict) and isinstance(same, dict) and isinstance(changed, dict)
    results["floor_met"] = all(found["p50_ms"] <= FLOOR_P50_MS for found in (unchanged, same, changed))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        size, filled = results["bytes"], results["fill_seconds"]
        assert isinstance(size, int)
        print(f"GET /v1/waits, {args.locks:,} held, {args.locks:,} waiters, {args.calls} calls each; answer "
              f"{size / 1e6:.1f} MB; filled in {filled} s; {os.cpu_count()} cores")  # fmt: skip
        for label, found in (("unchanged view", unchanged), ("revision moved", same), ("an edge changed", changed)):
            verdict = "PASS" if found["p50_ms"] <= FLOOR_P50_MS else "FAIL"
            print(f"  {label:16}  p50 {found['p50_ms']:7.1f} ms  p99 {found['p99_ms']:7.1f} ms  "
                  f"floor p50 <= {FLOOR_P50_MS:.0f} ms {verdict}")  # fmt: skip
    return 0 if results["floor_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
