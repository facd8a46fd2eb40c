"""The admin API's lock, member, audit and metrics endpoints against real etcd and real holders."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator

import pytest
import tooz.coordination
from fastapi.testclient import TestClient

from lockd.api import create_app
from lockd.config import Settings
from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url
from tests.etcd_process import EtcdMember
from tests.integration.api_server import ApiServer, metric
from tests.procs import wait_for

TOKEN = "s3cret-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def backend_url(etcd: EtcdMember) -> str:
    return f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=3&timeout=2"


@pytest.fixture(scope="module")
def server(backend_url: str) -> Iterator[ApiServer]:
    with ApiServer(Settings(backend_url=backend_url, admin_token=TOKEN)) as srv:
        yield srv


@pytest.fixture
def http(server: ApiServer) -> Iterator:
    with server.client() as client:
        yield client


def _held(http, name: str) -> dict | None:
    answer = http.get(f"/v1/locks/{name}")
    return answer.json() if answer.status_code == 200 else None


def test_lockd_holder_is_listed_with_member_token_and_ttl(http, coordinator, lock_name: str) -> None:
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    one = wait_for(lambda: _held(http, lock_name), what="the lock to show up")
    assert one["holder"] == {"member": coordinator._member_id.decode(), "host": os.uname().nodename, "pid": os.getpid()}
    assert one["token"] == lock.token
    assert one["waiters"] == 0
    assert one["acquired_at"] is not None
    assert one["ttl_remaining"] is not None and 0 < one["ttl_remaining"] <= 3
    listed = http.get("/v1/locks", params={"prefix": lock_name}).json()["locks"]
    assert [item["name"] for item in listed] == [lock_name]
    assert listed[0]["token"] == lock.token
    lock.release()
    wait_for(lambda: http.get(f"/v1/locks/{lock_name}").status_code == 404, what="the release to show")


def test_stock_tooz_holder_is_listed_with_null_holder(http, stock_url: str, lock_name: str) -> None:
    stock = tooz.coordination.get_coordinator(stock_url, b"stock-holder")
    stock.start()
    try:
        lock = stock.get_lock(lock_name.encode())
        assert lock.acquire()
        one = wait_for(lambda: _held(http, lock_name), what="the stock lock to show up")
        assert one["holder"] is None
        assert isinstance(one["token"], int) and one["token"] > 0
        assert one["ttl_remaining"] is not None and one["ttl_remaining"] > 0
        lock.release()
    finally:
        stock.stop()


def test_waiters_are_counted_while_queued(http, coordinator, etcd_url: str, lock_name: str) -> None:
    holder = coordinator.get_lock(lock_name)
    assert holder.acquire()
    other = tooz.coordination.get_coordinator(etcd_url, b"waiter-" + uuid.uuid4().hex[:6].encode())
    other.start()
    got: list[bool] = []
    try:
        waiter = other.get_lock(lock_name)
        thread = threading.Thread(target=lambda: got.append(waiter.acquire(blocking=30)))
        thread.start()
        wait_for(lambda: (_held(http, lock_name) or {}).get("waiters") == 1, what="one waiter")
        holder.release()
        thread.join(30)
        assert got == [True]
        # the view follows etcd by watch: it may briefly show the lock free between release and take
        after = wait_for(
            lambda: (held := _held(http, lock_name)) and held["token"] == waiter.token and held,
            what="the waiter as the new holder",
        )
        assert after["waiters"] == 0
        waiter.release()
    finally:
        other.stop()


def test_listing_answers_each_lock_as_its_own_page_does(
    http, coordinator, stock_url: str, etcd_url: str, lock_name: str
) -> None:
    """The listing builds its rows without a pydantic model per lock (speed): same shape, same values."""
    held = coordinator.get_lock(lock_name + "-a")
    assert held.acquire()
    stock = tooz.coordination.get_coordinator(stock_url, b"stock-holder")
    stock.start()
    other = tooz.coordination.get_coordinator(etcd_url, b"waiter-" + uuid.uuid4().hex[:6].encode())
    other.start()
    waiter = other.get_lock(lock_name + "-a")
    got: list[bool] = []
    thread = threading.Thread(target=lambda: got.append(waiter.acquire(blocking=30)))
    try:
        assert stock.get_lock((lock_name + "-b").encode()).acquire()
        thread.start()
        wait_for(lambda: (_held(http, lock_name + "-a") or {}).get("waiters") == 1, what="one waiter")
        wait_for(lambda: _held(http, lock_name + "-b"), what="the stock lock to show up")
        listed = http.get("/v1/locks", params={"prefix": lock_name}).json()["locks"]
        pages = [_held(http, lock_name + "-a"), _held(http, lock_name + "-b")]
        assert [row["name"] for row in listed] == [lock_name + "-a", lock_name + "-b"]
        for row, page in zip(listed, pages, strict=True):
            assert set(row) == set(page) == {"name", "holder", "token", "acquired_at", "ttl_remaining", "waiters"}
            assert row["ttl_remaining"] == pytest.approx(page["ttl_remaining"], abs=1.5)
            assert {**row, "ttl_remaining": 0} == {**page, "ttl_remaining": 0}
        assert listed[0]["waiters"] == 1 and listed[0]["holder"] is not None and listed[1]["holder"] is None
    finally:
        held.release()
        thread.join(30)
        if got == [True]:
            waiter.release()
        other.stop()
        stock.stop()


def test_break_needs_the_admin_token(http, coordinator, lock_name: str) -> None:
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    wait_for(lambda: _held(http, lock_name))
    assert http.delete(f"/v1/locks/{lock_name}").status_code == 401
    assert http.delete(f"/v1/locks/{lock_name}", headers={"Authorization": "Basic " + TOKEN}).status_code == 401
    assert http.delete(f"/v1/locks/{lock_name}", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert http.delete(f"/v1/locks/{lock_name}", headers={"Authorization": "Bearer " + TOKEN + "x"}).status_code == 403
    assert lock.is_still_owner(), "a refused break must change nothing"
    lock.release()


def test_break_releases_the_lock_audits_it_and_the_holder_sees_it(http, coordinator, lock_name: str) -> None:
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    token = lock.token
    wait_for(lambda: _held(http, lock_name))
    before = metric(http, "lockd_lock_breaks_total")
    answer = http.delete(f"/v1/locks/{lock_name}", headers=AUTH)
    assert answer.status_code == 204
    assert not lock.is_still_owner()
    assert http.delete(f"/v1/locks/{lock_name}", headers=AUTH).status_code == 404
    wait_for(lambda: http.get(f"/v1/locks/{lock_name}").status_code == 404)
    breaks = http.get("/v1/audit", params={"name": lock_name}).json()["breaks"]
    assert [(b["name"], b["token"], b["holder"]["member"]) for b in breaks] == [
        (lock_name, token, coordinator._member_id.decode())
    ]
    assert metric(http, "lockd_lock_breaks_total") == before + 1
    assert not lock.release()


def test_break_of_a_stock_holder_lets_another_stock_client_in(http, stock_url: str, lock_name: str) -> None:
    first = tooz.coordination.get_coordinator(stock_url, b"stock-a")
    second = tooz.coordination.get_coordinator(stock_url, b"stock-b")
    first.start()
    second.start()
    try:
        assert first.get_lock(lock_name.encode()).acquire()
        wait_for(lambda: _held(http, lock_name))
        assert not second.get_lock(lock_name.encode()).acquire(blocking=False)
        assert http.delete(f"/v1/locks/{lock_name}", headers=AUTH).status_code == 204
        taker = second.get_lock(lock_name.encode())
        assert taker.acquire(blocking=False)
        taker.release()
    finally:
        first.stop()
        second.stop()


def test_break_of_an_unheld_lock_is_404(http, lock_name: str) -> None:
    assert http.delete(f"/v1/locks/{lock_name}", headers=AUTH).status_code == 404
    assert http.get(f"/v1/locks/{lock_name}").status_code == 404


def test_pages_of_the_listing_cover_every_lock_once_in_name_order(http, coordinator, lock_name: str) -> None:
    names = [f"{lock_name}-{i:02d}" for i in range(7)]
    locks = [coordinator.get_lock(name) for name in names]
    try:
        for lock in locks:
            assert lock.acquire()
        wait_for(lambda: len(http.get("/v1/locks", params={"prefix": lock_name}).json()["locks"]) == 7, what="7")
        whole = http.get("/v1/locks", params={"prefix": lock_name}).json()
        assert whole["next"] is None and [row["name"] for row in whole["locks"]] == names
        seen, after, pages = [], "", 0
        while True:
            page = http.get("/v1/locks", params={"prefix": lock_name, "limit": 3, "after": after}).json()
            pages += 1
            seen += page["locks"]
            if page["next"] is None:
                break
            assert page["next"] == page["locks"][-1]["name"]
            after = page["next"]
        assert pages == 3
        assert [(row["name"], row["token"]) for row in seen] == [(row["name"], row["token"]) for row in whole["locks"]]
        for bad in ({"limit": 0}, {"limit": "x"}, {"after": "\u00e9"}):
            answer = http.get("/v1/locks", params={"prefix": lock_name, **bad})
            assert answer.status_code == 422, (bad, answer.text)
    finally:
        for lock in locks:
            lock.release()


def test_members_list_the_coordinator_with_its_locks(http, coordinator, lock_name: str) -> None:
    member = coordinator._member_id.decode()
    locks = [coordinator.get_lock(f"{lock_name}-{i}") for i in range(2)]
    for lock in locks:
        assert lock.acquire()

    def mine() -> dict | None:
        found = [m for m in http.get("/v1/members").json()["members"] if m["member"] == member]
        return found[0] if found and found[0]["locks_held"] == 2 else None

    record = wait_for(mine, what="the member with two locks")
    assert record["pid"] == os.getpid()
    assert record["last_seen"] is not None
    for lock in locks:
        lock.release()


def test_a_lease_that_ends_with_locks_held_is_counted(http, coordinator, backend_url: str, lock_name: str) -> None:
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    wait_for(lambda: _held(http, lock_name))
    before = metric(http, "lockd_lease_losses_total")
    client = EtcdClient(parse_backend_url(backend_url))
    try:
        assert client.lease_revoke(lock.session.lease_id)  # what etcd does when the lease runs out
    finally:
        client.close()
    wait_for(lambda: metric(http, "lockd_lease_losses_total") >= before + 1, what="the lease loss metric")
    assert http.get(f"/v1/locks/{lock_name}").status_code == 404


def test_metrics_export_gauges_and_request_counts(http, coordinator, lock_name: str) -> None:
    assert coordinator.get_lock(lock_name).acquire()
    wait_for(lambda: _held(http, lock_name))
    assert metric(http, "lockd_locks_held") >= 1
    text = http.get("/metrics").text
    assert 'lockd_api_requests_total{method="GET",route="/v1/locks/{name:path}",status="200"}' in text
    assert lock_name not in text, "lock names must not become metric labels"


def test_the_token_never_appears_in_answers_or_logs(http, coordinator, lock_name, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    assert coordinator.get_lock(lock_name).acquire()
    wait_for(lambda: _held(http, lock_name))
    answers = [
        http.get(path).text
        for path in ("/openapi.json", "/metrics", "/v1/locks", "/v1/members", "/v1/audit", "/readyz")
    ]
    answers.append(http.delete(f"/v1/locks/{lock_name}", headers={"Authorization": "Bearer nope"}).text)
    answers.append(http.delete(f"/v1/locks/{lock_name}", headers=AUTH).text)
    for text in answers + [caplog.text]:
        assert TOKEN not in text
    assert "force-released lock" in caplog.text


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_without_a_token_mutations_are_refused_on_any_bind(
    backend_url: str, coordinator, lock_name: str, caplog, host: str
) -> None:
    """No loopback exemption: a browser page on this host can reach 127.0.0.1 too."""
    caplog.set_level(logging.WARNING)
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    app = create_app(Settings(backend_url=backend_url, host=host))  # never bound: TestClient is in-process
    assert "no admin token" in caplog.text
    with TestClient(app, base_url="http://127.0.0.1") as client:
        wait_for(lambda: client.get(f"/v1/locks/{lock_name}").status_code == 200)  # reads stay open
        refused = client.delete(f"/v1/locks/{lock_name}")
        assert refused.status_code == 403 and "no admin token" in refused.json()["detail"]
        body = {"expected": [None], "target": "available"}
        refused = client.post(f"/v1/status/volume/{lock_name}/transition", json=body)
        assert refused.status_code == 403 and "no admin token" in refused.json()["detail"]
        assert client.get(f"/v1/status/volume/{lock_name}").status_code == 404, "a refused transition wrote"
    assert lock.is_still_owner(), "a refused break must change nothing"
    lock.release()
