"""cinder-volume's runtime: eventlet monkey-patched, green threads contending on one lockd lock.

Prints one JSON line: the order of enter/exit marks and whether a lock held past several lease TTLs is still
owned (the keepalive thread is a green thread under eventlet and must still run).
"""

import eventlet

eventlet.monkey_patch()

import json  # noqa: E402
import sys  # noqa: E402

import tooz.coordination  # noqa: E402

url, name = sys.argv[1], sys.argv[2]
coord = tooz.coordination.get_coordinator(url, b"eventlet-client")
coord.start(start_heart=True)
marks: list[int] = []


def worker(i: int) -> None:
    lock = coord.get_lock(name)
    for _ in range(5):
        assert lock.acquire(blocking=20)
        marks.append(i)
        eventlet.sleep(0.005)
        marks.append(i)
        lock.release()


for green in [eventlet.spawn(worker, i) for i in range(4)]:
    green.wait()
held = coord.get_lock(name + "-held")
held.acquire()
eventlet.sleep(3 * coord.options.lease_ttl)
print(json.dumps({"marks": marks, "still_owner": held.is_still_owner()}))
held.release()
coord.stop()
