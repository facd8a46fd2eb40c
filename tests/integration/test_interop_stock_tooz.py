"""A mixed fleet during a rolling upgrade: lockd and stock tooz etcd3+http holders exclude each other."""

from __future__ import annotations

import signal
import threading
import time

import tooz.coordination

from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.lock import Holder
from lockd.options import parse_backend_url
from tests.procs import WorkerProcess


def started(url: str, member: bytes) -> tooz.coordination.CoordinationDriver:
    coord = tooz.coordination.get_coordinator(url, member)
    coord.start()
    return coord


def test_lockd_holder_excludes_stock_tooz(coordinator, stock_url, lock_name) -> None:
    stock = started(stock_url, b"stock")
    try:
        lock = coordinator.get_lock(lock_name)
        assert lock.acquire()
        stock_lock = stock.get_lock(lock_name.encode())
        assert stock_lock.acquire(blocking=False) is False
        assert lock.release()
        assert stock_lock.acquire(blocking=False) is True
        stock_lock.release()
    finally:
        stock.stop()


def test_stock_tooz_holder_excludes_lockd_and_lockd_wakes_on_its_release(coordinator, stock_url, lock_name) -> None:
    stock = started(stock_url, b"stock")
    try:
        stock_lock = stock.get_lock(lock_name.encode())
        assert stock_lock.acquire(blocking=False)
        lock = coordinator.get_lock(lock_name)
        assert lock.acquire(blocking=False) is False
        got = threading.Event()
        t = threading.Thread(target=lambda: lock.acquire(blocking=30) and got.set())
        t.start()
        time.sleep(0.2)  # let it queue behind the stock holder; it must not get in while the stock lock is held
        assert not got.is_set()
        stock_lock.release()
        t.join(30)
        assert got.is_set()
        assert lock.release()
    finally:
        stock.stop()


def test_stock_tooz_value_is_reported_as_an_unknown_holder(etcd_url, stock_url, lock_name) -> None:
    stock = started(stock_url, b"stock")
    try:
        stock_lock = stock.get_lock(lock_name.encode())
        assert stock_lock.acquire(blocking=False)
        kv = EtcdClient(parse_backend_url(etcd_url)).get(keys.lock_key(lock_name))
        assert kv is not None and not Holder.decode(kv.value).is_lockd
        stock_lock.release()
    finally:
        stock.stop()


def test_mixed_fleet_contention_keeps_the_counter_exact(etcd_url, stock_url, lock_name, tmp_path) -> None:
    counter, history = tmp_path / "counter", tmp_path / "history"
    workers = [
        WorkerProcess(url, lock_name, "contend", cycles=15, hold=0.002, counter=str(counter), history=str(history))
        for url in (etcd_url, etcd_url, stock_url, stock_url)
    ]
    for w in workers:
        w.wait_event("done", timeout=120)
        w.proc.wait(30)
    assert int(counter.read_text()) == 60


def test_control_stock_tooz_holder_that_exits_on_sigterm_keeps_the_lock(etcd_url, stock_url, lock_name) -> None:
    """The stock-tooz half of our SIGTERM test: its stop() releases nothing, so the key outlives the process."""
    worker = WorkerProcess(stock_url, lock_name, "hold")
    assert worker.wait_event("acquired", "not-acquired")["event"] == "acquired"
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(30)
    assert EtcdClient(parse_backend_url(etcd_url)).get(keys.lock_key(lock_name)) is not None
