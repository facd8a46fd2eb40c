"""Close watch streams under eventlet, as a process whose member fails over does, and count reader failures.

Usage: python watch_close_eventlet.py WS_URL ROUNDS   (prints one JSON line: {"reader_failures": N})

Each round opens a stream, closes it, and at once opens plain sockets, which take the descriptor numbers the
closed stream's socket had. A reader left blocked on a closed descriptor wakes on the reused one and fails (or
worse, reads another connection's bytes); with the reader as the socket's only closer, nothing fails.
"""

import eventlet

eventlet.monkey_patch()

import json  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from lockd.etcd.watch import WatchHub  # noqa: E402

failures: list[str] = []


class Count(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            failures.append(record.getMessage())


logging.getLogger("lockd.etcd.watch").addHandler(Count())
url, rounds = sys.argv[1], int(sys.argv[2])
where = urlsplit(url)
for _ in range(rounds):
    hub = WatchHub(0, url, 2.0)
    eventlet.sleep(0.01)
    hub.close("closed by the test")
    others = [socket.create_connection((where.hostname, where.port)) for _ in range(3)]
    for other in others:
        other.sendall(b"GET /version HTTP/1.1\r\nHost: etcd\r\n\r\n")
    eventlet.sleep(0.05)
    for other in others:
        other.close()
print(json.dumps({"reader_failures": len(failures)}))
