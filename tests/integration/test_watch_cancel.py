"""A closed watch is forgotten at once and cancelled at etcd with the hub's next creation (lockd.etcd.watch).

A lock waiter closes its two watches between the grant's event and ``acquire()`` returning; the cancels wait for
the next creation so that no frame is sent there. These tests read etcd's own count of its watchers, so they show
what etcd keeps meanwhile, and that it stays bounded.
"""

from __future__ import annotations

import time
import urllib.request

from lockd.etcd.client import EtcdClient, op_put
from lockd.etcd.watch import _CANCELS_AT_ONCE
from lockd.options import parse_backend_url
from tests.etcd_process import EtcdMember


def _watchers(etcd: EtcdMember) -> int:
    """etcd's gauge of its watchers (every client's; the tests' etcd serves one test at a time)."""
    with urllib.request.urlopen(f"http://{etcd.endpoint}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("etcd_debugging_mvcc_watcher_total "):
                return int(float(line.split()[1]))
    raise AssertionError("etcd exposes no etcd_debugging_mvcc_watcher_total")


def _settles(etcd: EtcdMember, expected: int, within: float = 5.0) -> int:
    """etcd's watcher count once it equals ``expected`` (etcd applies a cancel asynchronously), or after ``within``
    seconds."""
    end = time.monotonic() + within
    while (seen := _watchers(etcd)) != expected and time.monotonic() < end:
        time.sleep(0.05)
    return seen


def test_closed_watches_are_cancelled_with_the_next_creation(etcd: EtcdMember, etcd_url: str, lock_name: str) -> None:
    client = EtcdClient(parse_backend_url(etcd_url))
    key = f"/test/watch-cancel/{lock_name}".encode()
    try:
        before = _watchers(etcd)
        watches = [client.watch(key) for _ in range(3)]
        assert _settles(etcd, before + 3) == before + 3
        for watch in watches:
            watch.close()
        client.txn([], [op_put(key, b"after the close")])
        assert (
            _settles(etcd, before + 2, within=1) == before + 3
        )  # forgotten here, still at etcd: nothing sent on close
        kept = client.watch(key)  # the creation takes the three cancels with it
        assert _settles(etcd, before + 1) == before + 1
        kept.close()
    finally:
        client.close()


def test_etcd_keeps_fewer_closed_watches_than_the_bound(etcd: EtcdMember, etcd_url: str, lock_name: str) -> None:
    client = EtcdClient(parse_backend_url(etcd_url))
    key = f"/test/watch-cancel/{lock_name}".encode()
    try:
        before = _watchers(etcd)
        watches = [client.watch(key) for _ in range(_CANCELS_AT_ONCE)]
        for watch in watches:
            watch.close()  # the last close makes them due: sent without waiting for a creation
        assert _settles(etcd, before) == before
    finally:
        client.close()
