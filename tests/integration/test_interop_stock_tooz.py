"""A mixed fleet during a rolling upgrade: lockd and stock tooz etcd3+http holders exclude each other."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest
import tooz.coordination

from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.lock import Holder
from lockd.options import parse_backend_url
from tests.etcd_process import queue_entries
from tests.procs import WorkerProcess, wait_for

pytestmark = pytest.mark.both_etcd


@pytest.fixture
def stock(stock_url: str) -> Iterator[tooz.coordination.CoordinationDriver]:
    """A stock tooz etcd3+http coordinator on the same etcd: the other half of a mixed fleet."""
    coord = tooz.coordination.get_coordinator(stock_url, b"stock")
    coord.start()
    yield coord
    coord.stop()


def test_lockd_holder_excludes_stock_tooz(coordinator, stock, lock_name) -> None:
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    stock_lock = stock.get_lock(lock_name.encode())
    assert stock_lock.acquire(blocking=False) is False
    assert lock.release()
    assert stock_lock.acquire(blocking=False) is True
    stock_lock.release()


def test_stock_tooz_holder_excludes_lockd_and_lockd_wakes_on_its_release(
    coordinator, stock, etcd_url, lock_name
) -> None:
    stock_lock = stock.get_lock(lock_name.encode())
    assert stock_lock.acquire(blocking=False)
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire(blocking=False) is False
    got = threading.Event()
    t = threading.Thread(target=lambda: lock.acquire(blocking=30) and got.set())
    t.start()
    wait_for(lambda: len(queue_entries(etcd_url, lock_name)) == 1, 10, "lockd to queue behind the stock holder")
    assert not got.is_set()
    stock_lock.release()
    t.join(30)
    assert got.is_set()
    assert lock.release()


def test_stock_tooz_value_is_reported_as_an_unknown_holder(etcd_url, stock, lock_name) -> None:
    stock_lock = stock.get_lock(lock_name.encode())
    assert stock_lock.acquire(blocking=False)
    kv = EtcdClient(parse_backend_url(etcd_url)).get(keys.lock_key(lock_name))
    assert kv is not None and not Holder.decode(kv.value).is_lockd
    stock_lock.release()


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
