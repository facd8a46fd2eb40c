"""What the shape of lockd's uncontended txns costs etcd, against the two-txn floor (issue 25, item 6).

A measurement, not a test. One kept-alive ``http.client`` connection to a private etcd, two txns per cycle as
``lockd bench``'s etcd-floor target sends them (put-if-absent on a lock key, then delete), and the same cycle
with one of lockd's differences at a time: the put on a lease, the holder's JSON value (~200 bytes) instead of
one byte, the second compare (the queue range empty), the failure branch (enqueue and reads) and a second
delete; then all of them, which is the shape of lockd's uncontended acquire + release. Variants run in
interleaved batches of 150 cycles, 12 rounds, so machine noise falls on all alike; each prints the median of
its batch medians and the ratio to the floor. What is left between the floor and ``lockd bench``'s
uncontended figure is the client's own work.

    .venv/bin/python bench/txn_shapes.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lockd.bench.etcd import LocalEtcd  # noqa: E402
from lockd.bench.gateway import Gateway  # noqa: E402
from lockd.etcd.wire import b64  # noqa: E402

#: name -> (on a lease, holder-sized value, queue compare, failure branch, second delete)
VARIANTS = {
    "floor": (False, False, False, False, False),
    "+lease": (True, False, False, False, False),
    "+value": (False, True, False, False, False),
    "+queue compare": (False, False, True, False, False),
    "+failure ops": (False, False, False, True, False),
    "+second delete": (False, False, False, False, True),
    "lockd's uncontended shape": (True, True, True, True, False),
    "the same, no failure ops": (True, True, True, False, False),
}


def cycle(gw: Gateway, lease: int, shape: tuple[bool, bool, bool, bool, bool]) -> float:
    on_lease, big, queue_compare, failure, second_delete = shape
    key, prefix, prefix_end = b"/tooz/locks/shape", b"/lockd/queue/shape/", b"/lockd/queue/shape0"
    entry = prefix + b"w"
    value = json.dumps(
        {"member": "m" * 20, "host": "vm", "pid": 12345, "thread": 140000000000000, "acquired_at": time.time(),
         "waiter": "a" * 33, "template": "x" * 20}, separators=(",", ":"),
    ).encode()  # fmt: skip
    compare = [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}]
    if queue_compare:
        compare.append(
            {"key": b64(prefix), "range_end": b64(prefix_end), "target": "CREATE", "result": "EQUAL",
             "create_revision": "0"}
        )  # fmt: skip
    put: dict[str, Any] = {"key": b64(key), "value": b64(value if big else b"x")}
    if on_lease:
        put["lease"] = str(lease)
    otherwise = [{"request_put": {"key": b64(entry), "value": b64(value)}}, {"request_range": {"key": b64(key)}}]
    deletes = [{"request_delete_range": {"key": b64(key)}}]
    if second_delete:
        deletes.append({"request_delete_range": {"key": b64(entry)}})
    started = time.perf_counter()
    gw.post("kv/txn", {"compare": compare, "success": [{"request_put": put}], "failure": otherwise if failure else []})
    held = [{"key": b64(key), "target": "CREATE", "result": "GREATER", "create_revision": "0"}]
    gw.post("kv/txn", {"compare": held, "success": deletes})
    return time.perf_counter() - started


def main() -> int:
    etcd = LocalEtcd()
    etcd.start()
    try:
        gw = Gateway(etcd.endpoint)
        lease = int(gw.post("lease/grant", {"TTL": 600})["ID"])
        for _ in range(100):
            cycle(gw, lease, VARIANTS["floor"])
        medians: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(12):
            for name, shape in VARIANTS.items():
                medians[name].append(statistics.median(cycle(gw, lease, shape) for _ in range(150)) * 1000)
        floor = statistics.median(medians["floor"])
        for name, values in medians.items():
            p50 = statistics.median(values)
            print(f"{name:26} p50 {p50:.3f} ms  {p50 / floor:.3f}x the floor")
    finally:
        etcd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
