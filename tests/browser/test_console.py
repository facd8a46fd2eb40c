"""The web console in a real browser: live without reload, the break button, no secrets, keyboard, layout, times.

Locks are taken by other processes (tests/worker.py) the way cinder-volume takes them; each test looks at its
own uuid-named lock through the page's prefix filter, so other tests' locks on the shared etcd do not matter.
Waits are deadlines on what the reader sees (2 s for a change to show, as the console promises ~1 s).
"""

from __future__ import annotations

import datetime
import urllib.parse

import httpx
import pytest
import tooz.coordination

from tests.browser.conftest import Console
from tests.procs import WorkerProcess, wait_for

pytestmark = pytest.mark.browser

SHOWS_WITHIN = 2.0  # seconds: a change must be on the page this soon after it happened
WAITERS_TEXT = "return document.querySelector('[data-waiters]').innerText"


def _js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def _row(driver, name: str) -> dict | None:
    """The overview's row for ``name`` as the reader sees it (cell texts), or None when absent."""
    return _js(
        driver,
        """const row = [...document.querySelectorAll('tr[data-lock]')].find(r => r.dataset.lock === arguments[0]);
           if (!row) return null;
           return {cells: [...row.children].map(c => c.innerText.trim()),
                   waiters: row.querySelector('[data-waiters]').innerText.trim()};""",
        name,
    )


def _open(driver, url: str) -> None:
    driver.get(url)
    _js(driver, "window.__sameDocument = true;")  # gone if the page ever reloads


def _same_document(driver) -> bool:
    return _js(driver, "return window.__sameDocument === true;")


def _held(console: Console, name: str) -> bool:
    return httpx.get(f"{console.url}/v1/locks/{urllib.parse.quote(name, safe='')}", timeout=5).status_code == 200


def test_a_lock_appears_its_waiters_move_and_release_removes_it_without_reload(
    driver, console: Console, workers: list, lock_name: str
) -> None:
    _open(driver, f"{console.url}/?prefix={lock_name}")
    assert _row(driver, lock_name) is None

    first = WorkerProcess(console.backend_url, lock_name, "hold")
    workers.append(first)
    token = first.wait_event("acquired")["token"]
    row = wait_for(lambda: _row(driver, lock_name), SHOWS_WITHIN, "the new lock on the page")
    assert str(token) in row["cells"] and row["waiters"] == "0"

    second = WorkerProcess(console.backend_url, lock_name, "hold")
    workers.append(second)
    wait_for(lambda: (r := _row(driver, lock_name)) and r["waiters"] == "1", 30, "the waiter to queue")

    first.finish()
    first.wait_event("released")
    second_token = second.wait_event("acquired")["token"]
    wait_for(
        lambda: (r := _row(driver, lock_name)) and str(second_token) in r["cells"] and r["waiters"] == "0",
        SHOWS_WITHIN,
        "the handover to the waiter",
    )
    second.finish()
    second.wait_event("released")
    wait_for(lambda: _row(driver, lock_name) is None, SHOWS_WITHIN, "the released lock to leave the page")
    assert _same_document(driver), "the page reloaded instead of updating in place"


def test_the_lock_page_lists_waiters_in_queue_order(driver, console: Console, workers: list, lock_name: str) -> None:
    holder = WorkerProcess(console.backend_url, lock_name, "hold")
    workers.append(holder)
    holder.wait_event("acquired")
    _open(driver, f"{console.url}/ui/locks/{lock_name}")
    pids = []
    for _ in range(2):  # one after the other, so their queue order is known
        waiter = WorkerProcess(console.backend_url, lock_name, "hold")
        workers.append(waiter)
        pids.append(str(waiter.proc.pid))
        queued = str(len(pids))
        wait_for(
            lambda expected=queued: _js(driver, WAITERS_TEXT) == expected,
            30,
            f"{queued} waiter(s) on the lock page",
        )
    rows = _js(driver, "return [...document.querySelectorAll('tbody tr')].map(r => r.children[3].innerText);")
    assert rows == pids, "waiters must be listed in the order they queued"
    assert _same_document(driver)


def test_break_button_refuses_a_wrong_token_then_breaks_by_keyboard(
    driver, console: Console, workers: list, lock_name: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    holder = WorkerProcess(console.backend_url, lock_name, "hold")
    workers.append(holder)
    holder.wait_event("acquired")
    _open(driver, f"{console.url}/?prefix={lock_name}")
    wait_for(lambda: _row(driver, lock_name), SHOWS_WITHIN, "the lock on the page")

    def open_dialog() -> None:
        button = driver.find_element(By.CSS_SELECTOR, f'button[data-key="break:{lock_name}"]')
        button.send_keys(Keys.ENTER)  # the keyboard, as an operator without a mouse would
        wait_for(lambda: _js(driver, "return document.getElementById('break-dialog').open"), 5, "the dialog")
        assert _js(driver, "return document.activeElement.id") == "break-token"

    def result() -> str:
        return _js(driver, "const r = document.getElementById('break-result'); return r.hidden ? '' : r.innerText;")

    open_dialog()
    driver.switch_to.active_element.send_keys("not-the-token" + Keys.ENTER)
    wait_for(lambda: "was not broken" in result(), 5, "the refusal")
    assert "wrong" in result() and "403" in result()
    assert _held(console, lock_name), "a wrong token must break nothing"
    assert _row(driver, lock_name) is not None

    open_dialog()
    driver.switch_to.active_element.send_keys(console.token + Keys.ENTER)
    wait_for(lambda: result().startswith("Broke lock"), 5, "the break to be reported")
    assert not _held(console, lock_name)
    wait_for(lambda: _row(driver, lock_name) is None, SHOWS_WITHIN, "the broken lock to leave the page")
    wait_for(
        lambda: lock_name in _js(driver, "return document.getElementById('breaks').innerText"),
        SHOWS_WITHIN,
        "the break in the audit trail on the page",
    )

    # The token was used for those requests and kept nowhere the page or the browser could give it back.
    assert console.token not in _js(driver, "return document.documentElement.outerHTML")
    assert _js(driver, "return document.getElementById('break-token').value") == ""
    assert driver.get_cookies() == []
    assert _js(driver, "return localStorage.length + sessionStorage.length") == 0
    for path in ("/", "/v1/locks", "/v1/audit", "/v1/members", "/openapi.json"):
        assert console.token not in httpx.get(console.url + path, timeout=5).text


def test_local_times_with_utc_on_hover_no_sideways_scroll_and_readable_without_script(
    driver, console: Console, etcd_url: str, lock_name: str
) -> None:
    long_name = f"{lock_name}-" + "x" * 480  # names may be 512 characters; the table must wrap them
    coordinator = tooz.coordination.get_coordinator(etcd_url, b"browser-" + b"m" * 120)
    coordinator.start()
    try:
        lock = coordinator.get_lock(long_name.encode())
        assert lock.acquire()
        for url in (f"{console.url}/?prefix={lock_name}", f"{console.url}/ui/locks/{long_name}"):
            _open(driver, url)
            wait_for(lambda: "Live: updated" in _js(driver, "return document.querySelector('.refresh').innerText"), 5)
            assert _js(driver, "return window.innerWidth") == 1280
            assert _js(driver, "return document.documentElement.scrollWidth") <= 1280, f"sideways scroll on {url}"

        time_el = _js(driver, "const t = document.querySelector('time'); return [t.innerText, t.title, t.dateTime];")
        shown, title, iso = time_el
        utc = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
        tokyo = utc.astimezone(datetime.timezone(datetime.timedelta(hours=9)))
        assert tokyo.strftime("%H:%M:%S") in shown, (shown, tokyo)
        assert title == utc.strftime("%Y-%m-%d %H:%M:%S UTC")

        driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
        try:
            driver.get(f"{console.url}/?prefix={lock_name}")
            text = _js_free_text(driver)
            assert long_name in text and "UTC" in text and "reload to refresh" in text
        finally:
            driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
        lock.release()
    finally:
        coordinator.stop()


def _js_free_text(driver) -> str:
    """The page's text read through WebDriver (not page script), for a page whose scripts are disabled."""
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text
