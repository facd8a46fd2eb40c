"""What a granting release's txn costs etcd, against the put-if-absent commit the handoff is counted in (issue 25).

A measurement, not a test. One kept-alive ``http.client`` connection to a private etcd. Each sample is one txn,
timed alone, after its keys were set up (untimed): the floor's put-if-absent of a one-byte value; a delete of one
key (a release with nobody to grant to); and the grant's shape (lockd.lock's ``Mutex._grant``): two compares, the
lock key put on the successor's lease with a holder-sized value, the successor's entry put with the grant mark,
our entry deleted, with a mark passing on 0, 3 or 7 waiters (``_CHAIN`` caps it at 8), as a JSON list of
[key, value] pairs (lockd's mark before packing) or packed as lockd packs it now (``lockd.lock._mark``), seven
waiters of distinct holder values. Variants run in interleaved batches of 100, 10 rounds; each prints the
median of its batch medians and the ratio to the floor, and the mark's size.

    .venv/bin/python bench/grant_shape.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lockd.bench.etcd import LocalEtcd  # noqa: E402
from lockd.bench.gateway import Gateway  # noqa: E402
from lockd.etcd.wire import b64  # noqa: E402
from lockd.lock import _GRANTED, _mark  # noqa: E402

LOCK, SUCCESSOR, OURS = b"/tooz/locks/grant-shape", b"/lockd/queue/grant-shape/b", b"/lockd/queue/grant-shape/a"


def main() -> int:
    with LocalEtcd() as etcd:
        gw = Gateway(etcd.endpoint)
        lease = int(gw.post("lease/grant", {"TTL": 600})["ID"])
        record = {"member": "bench-lockd-w3-12345", "host": "node-a", "pid": 12345, "thread": 140234234234}
        holder = json.dumps({**record, "acquired_at": time.time(), "waiter": f"{lease:x}-0123456789abcdef"}).encode()

        def timed(path: str, body: dict) -> float:
            began = time.perf_counter()
            gw.post(path, body)
            return time.perf_counter() - began

        def queue() -> None:
            for key in (LOCK, SUCCESSOR, OURS):
                gw.post("kv/put", {"key": b64(key), "value": b64(holder), "lease": lease})

        def floor() -> float:
            gw.post("kv/deleterange", {"key": b64(LOCK)})
            compare = [{"key": b64(LOCK), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}]
            return timed(
                "kv/txn", {"compare": compare, "success": [{"request_put": {"key": b64(LOCK), "value": "eA=="}}]}
            )

        def delete() -> float:
            queue()
            return timed("kv/deleterange", {"key": b64(OURS)})

        def waiter(i: int) -> tuple[bytes, bytes]:
            waiter = f"{lease + i:x}-{0x0123456789ABCDEF * (i + 1) % 2**64:016x}"
            value = {**record, "pid": 12345 + i, "thread": 140234234234 + 7 * i, "acquired_at": time.time() + i}
            return SUCCESSOR[:-1] + waiter.encode(), json.dumps({**value, "waiter": waiter}).encode()

        marks: dict[str, int] = {}

        def grant(passed_on: int, packed: bool = False) -> Callable[[], float]:
            known = [waiter(i) for i in range(passed_on)]
            plain = json.dumps([[key.decode(), value.decode()] for key, value in known]).encode()
            mark = _mark(known) if packed else _GRANTED + plain
            marks[f"{passed_on}{' packed' if packed else ''}"] = len(mark)

            def one() -> float:
                queue()
                compare = [
                    {"key": b64(LOCK), "target": "MOD", "result": "GREATER", "mod_revision": "0"},
                    {"key": b64(SUCCESSOR), "target": "VALUE", "result": "EQUAL", "value": b64(holder)},
                ]
                success = [
                    {"request_put": {"key": b64(LOCK), "value": b64(holder), "lease": lease}},
                    {"request_put": {"key": b64(SUCCESSOR), "value": b64(mark), "lease": lease}},
                    {"request_delete_range": {"key": b64(OURS)}},
                ]
                failure = [{"request_range": {"key": b64(LOCK)}}]
                return timed("kv/txn", {"compare": compare, "success": success, "failure": failure})

            return one

        variants: dict[str, Callable[[], float]] = {
            "floor: put-if-absent": floor,
            "delete one key": delete,
            "grant, passing on 0": grant(0),
            "grant, passing on 3": grant(3),
            "grant, passing on 7": grant(7),
            "grant, 7 packed": grant(7, packed=True),
        }
        medians: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(10):
            for name, sample in variants.items():
                medians[name].append(statistics.median(sample() for _ in range(100)))
        base = statistics.median(medians["floor: put-if-absent"])
        for name, values in medians.items():
            value = statistics.median(values)
            print(f"{name:24s} {value * 1000:.3f} ms  {value / base:.2f}x")
        print("mark bytes:", ", ".join(f"{k}: {v}" for k, v in marks.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
