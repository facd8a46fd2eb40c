"""The console's pages as served (no browser): what each shows for real holders, waiters, statuses and breaks.

The browser tests (tests/browser/) check what a reader sees live; these check the server-rendered content,
which is also what a reader without JavaScript gets.
"""

from __future__ import annotations

import html
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
import tooz.coordination

from lockd.config import Settings
from lockd.status import open_store
from tests.etcd_process import EtcdMember
from tests.integration.api_server import ApiServer
from tests.procs import wait_for

TOKEN = "console-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIVE = {"X-Lockd-Live": "1"}


@pytest.fixture(scope="module")
def server(etcd: EtcdMember) -> Iterator[ApiServer]:
    settings = Settings(backend_url=f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=3", admin_token=TOKEN)
    with ApiServer(settings) as srv:
        yield srv


def _listed(http: httpx.Client, prefix: str) -> str:
    return http.get("/", params={"prefix": prefix}, headers=LIVE).text


def test_overview_lists_held_locks_longest_first_within_the_prefix(http, coordinator, lock_name: str) -> None:
    older, newer = coordinator.get_lock(f"{lock_name}-b-older"), coordinator.get_lock(f"{lock_name}-a-newer")
    assert older.acquire() and newer.acquire()
    page = wait_for(lambda: (t := _listed(http, lock_name)) and 'data-total="2"' in t and t, what="both locks")
    assert page.index(f"{lock_name}-b-older") < page.index(f"{lock_name}-a-newer"), "longest held comes first"
    assert f">{older.token}<" in page and coordinator._member_id.decode() in page
    assert "<html" not in page, "the live refresh is the changing part only"
    full = http.get("/", params={"prefix": f"{lock_name}-a"})
    assert full.status_code == 200 and "<html" in full.text
    assert f"{lock_name}-a-newer" in full.text and f"{lock_name}-b-older" not in full.text
    assert full.headers["cache-control"] == "no-store"
    for lock in (older, newer):
        lock.release()


def test_a_bad_prefix_is_422_with_a_reason(http) -> None:
    answer = http.get("/", params={"prefix": "caf\u00e9"})
    assert answer.status_code == 422 and "printable ASCII" in answer.json()["detail"]


def test_lock_page_lists_waiters_in_queue_order_with_their_members(
    http, coordinator, etcd_url: str, lock_name: str
) -> None:
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    waiters = []
    for i in range(2):
        other = tooz.coordination.get_coordinator(etcd_url, f"console-waiter-{i}-{uuid.uuid4().hex[:6]}".encode())
        other.start(start_heart=True)
        waiting = other.get_lock(lock_name)
        thread = threading.Thread(target=waiting.acquire, daemon=True)
        thread.start()
        waiters.append((other, waiting, thread))
        wait_for(lambda n=str(i + 1): f"data-waiters>{n}<" in http.get(f"/ui/locks/{lock_name}", headers=LIVE).text)
    try:
        page = http.get(f"/ui/locks/{lock_name}").text
        first, second = (w[0]._member_id.decode() for w in waiters)
        assert page.index(first) < page.index(second), "the queue is shown in the order it will be served"
        assert f"<dd>{lock.token}</dd>" in page
    finally:
        lock.release()
        for other, waiting, thread in waiters:
            thread.join(15)
            waiting.release()
            other.stop()


def test_lock_page_of_a_lock_not_held_is_404_and_says_so(http, lock_name: str) -> None:
    answer = http.get(f"/ui/locks/{lock_name}")
    assert answer.status_code == 404 and "Not held now" in answer.text


def test_lock_page_links_the_status_of_the_resource_its_name_names(
    http, coordinator, etcd_url: str, lock_name: str
) -> None:
    volume = str(uuid.uuid4())
    name = f"cinder-{volume}-delete_volume-{lock_name}"
    lock = coordinator.get_lock(name)
    assert lock.acquire()
    store = open_store(etcd_url)
    try:
        assert store.compare_and_set("volume", volume, [None], "available").ok
        assert store.compare_and_set("volume", volume, ["available"], "deleting", fence=lock).ok
    finally:
        store.close()
    wait_for(lambda: http.get(f"/ui/locks/{name}").status_code == 200)
    page = http.get(f"/ui/locks/{name}").text
    assert f'href="/ui/status/volume/{volume}"' in page and "<strong>deleting</strong>" in page

    status = http.get(f"/ui/status/volume/{volume}")
    assert status.status_code == 200
    newest, oldest = status.text.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr>")[1:]
    assert "<td>available</td>" in newest and "<td>deleting</td>" in newest, "newest transition first"
    assert f">{lock.token}<" in newest, "a fenced transition shows the token it carried"
    assert "<td>(none)</td>" in oldest and "unfenced" in oldest
    lock.release()


def test_status_lookup_form_lands_on_the_status_page(http) -> None:
    answer = http.get("/ui/status", params={"kind": "volume", "id": "a b/c"}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/status/volume/a%20b%2Fc"
    unknown = http.get(answer.headers["location"])
    assert unknown.status_code == 404 and "No status is recorded" in unknown.text


def test_a_break_shows_in_the_recent_breaks(http, coordinator, lock_name: str) -> None:
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    wait_for(lambda: http.get(f"/v1/locks/{lock_name}").status_code == 200)
    assert http.delete(f"/v1/locks/{lock_name}", headers=AUTH).status_code == 204
    section = wait_for(
        lambda: (t := http.get("/", headers=LIVE).text.split('id="breaks"', 1)[1]) and lock_name in t and t,
        what="the break on the overview",
    )
    assert coordinator._member_id.decode() in section and "127.0.0.1 (admin token)" in section
    assert TOKEN not in http.get("/").text


def test_names_are_escaped(http, coordinator, lock_name: str) -> None:
    name = f'{lock_name}-<script>alert("x")</script>'
    lock = coordinator.get_lock(name)
    assert lock.acquire()
    # (the prefix itself is echoed in the filter box: wait for the lock's row, not for the name)
    page = wait_for(lambda: (t := _listed(http, lock_name)) and 'data-total="1"' in t and t, what="the lock's row")
    assert "<script>alert" not in page and html.escape(name).replace("&quot;", "&#34;") in page
    lock.release()


def test_a_deadlock_is_on_the_waits_page_and_in_the_overviews_banner_until_broken(
    http, etcd_url: str, lock_name: str
) -> None:
    """Two threads of two sessions in a cycle (the processes' case is tests/browser/test_deadlocks.py): both
    pages name the lock to break and the command, mark both locks; after the break the cycle is listed as ended."""
    a, b = f"{lock_name}-a", f"{lock_name}-b"
    coords = [
        tooz.coordination.get_coordinator(etcd_url, f"console-dl-{i}-{uuid.uuid4().hex[:6]}".encode()) for i in (1, 2)
    ]
    for coord in coords:
        coord.start(start_heart=True)
    held = [coords[0].get_lock(a), coords[1].get_lock(b)]
    wanted = [coords[0].get_lock(b), coords[1].get_lock(a)]
    both = threading.Barrier(2)

    def cross(i: int) -> None:  # owners are threads: each takes its first lock and waits in the same thread
        assert held[i].acquire()
        both.wait()
        if wanted[i].acquire():
            wanted[i].release()
        held[i].release()  # False for the one broken

    threads = [threading.Thread(target=cross, args=(i,), daemon=True) for i in (0, 1)]
    for thread in threads:
        thread.start()
    try:
        page = wait_for(lambda: (t := http.get("/ui/waits", headers=LIVE).text) and "data-deadlock=" in t and t, 10)
        youngest = a if held[0].token > held[1].token else b
        assert f"<code data-command>lockd break {youngest}</code>" in page
        assert f'class="name in-deadlock suggested" data-lock-name="{youngest}"' in page
        assert page.count('<tr class="in-deadlock" data-cycle-lock=') == 2
        overview = http.get("/", params={"prefix": lock_name}).text
        assert 'id="deadlocks" class="banner"' in overview and f"lockd break {youngest}" in overview
        assert f'<tr data-lock="{a}" class="in-deadlock">' in overview
        assert f'<tr data-lock="{b}" class="in-deadlock">' in overview
        assert TOKEN not in overview

        deadlock_id = page.split('data-deadlock="', 1)[1].split('"', 1)[0]
        assert http.delete(f"/v1/locks/{youngest}", headers=AUTH).status_code == 204
        ended = wait_for(
            lambda: (t := http.get("/ui/waits", headers=LIVE).text) and f'data-resolved="{deadlock_id}"' in t and t, 10
        )
        assert "data-no-deadlock" in ended and 'id="deadlocks"' not in http.get("/", headers=LIVE).text
    finally:
        for thread in threads:  # after the break both finish; on a failure, stopping the sessions ends them
            thread.join(15)
        for coord in coords:
            coord.stop()
