"""Delay every packet of one NFQUEUE by a fixed time, in order: netem's ``delay`` where the kernel has no netem.

Usage (inside the namespace whose iptables rules send packets to the queue):
    python -m tests.netdelay QUEUE_NUM DELAY_SECONDS

One thread, one loop: read whatever the kernel queued (each packet is kept, its verdict not yet given), then
accept each packet whose time has come. Packets leave in the order they arrived, each ``DELAY`` after it did,
as on a long link. Prints ``ready`` once bound, so the caller adds its iptables rule only after that (a rule
pointing at a queue nobody serves drops everything). Ends on SIGTERM/SIGKILL; the kernel drops what it still
holds, which is what a link that goes away does.
"""

from __future__ import annotations

import collections
import select
import socket
import sys
import time

from netfilterqueue import NetfilterQueue, Packet


def main() -> int:
    queue_num, delay = int(sys.argv[1]), float(sys.argv[2])
    waiting: collections.deque[tuple[float, Packet]] = collections.deque()

    def hold(packet: Packet) -> None:
        packet.retain()
        waiting.append((time.monotonic() + delay, packet))

    nfq = NetfilterQueue()
    nfq.bind(queue_num, hold, max_len=65536)
    sock = socket.fromfd(nfq.get_fd(), socket.AF_UNIX, socket.SOCK_STREAM)
    print("ready", flush=True)
    while True:
        timeout = max(0.0, waiting[0][0] - time.monotonic()) if waiting else 1.0
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            nfq.run(block=False)
        now = time.monotonic()
        while waiting and waiting[0][0] <= now:
            waiting.popleft()[1].accept()


if __name__ == "__main__":
    sys.exit(main())
