"""A deadlock across two real processes in a real browser: the console shows it, marks it, and shows it end.

Two processes (tests/deadlock_child.py, "cross") take two locks in opposite orders on the etcd behind a real
`lockd serve`. Within 3 s of the cycle closing (both queue entries in etcd) the Waits page shows one deadlock
with both locks and both owners marked and the suggested lock named with its `lockd break` command; the main
page shows the same in its banner and marks both locks' rows. After `lockd break` of the suggested lock the
deadlock leaves the open list and is listed as ended, without a reload.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from lockd.cli.main import main
from tests.browser.conftest import Console
from tests.etcd_process import queue_entries
from tests.procs import ChildProcess, wait_for

pytestmark = pytest.mark.browser

SHOWS_WITHIN = 3.0  # seconds from the cycle closing to the deadlock on the page (detection 0.5 s + poll 0.8 s)


def _cross(url: str, first: str, second: str) -> ChildProcess:
    spec = {"mode": "cross", "first": first, "second": second}
    return ChildProcess("-m", "tests.deadlock_child", url, json.dumps(spec))


def _shown(driver, names: set[str]) -> dict | None:
    """The open deadlock over ``names`` as the reader sees it, or None: its marked locks and owners, the lock
    marked to break and the command given for it."""
    found = driver.execute_script(
        """return [...document.querySelectorAll('[data-deadlock]')].map(d => ({
             id: d.dataset.deadlock,
             locks: [...d.querySelectorAll('[data-lock-name].in-deadlock')].map(e => e.dataset.lockName),
             owners: [...d.querySelectorAll('[data-owner-pid].in-deadlock')].map(e => Number(e.dataset.ownerPid)),
             suggested: [...d.querySelectorAll('.suggested[data-lock-name]')].map(e => e.dataset.lockName),
             command: (d.querySelector('[data-command]') || {}).innerText,
             text: d.innerText}));"""
    )
    return next((d for d in found if set(d["locks"]) == names), None)


def _resolved(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('[data-resolved]')].map(r => r.dataset.resolved);"
    )


def test_a_deadlock_shows_marked_with_the_lock_to_break_and_moves_to_ended_once_broken(
    driver, console: Console, workers: list[ChildProcess]
) -> None:
    tag = uuid.uuid4().hex[:8]
    a, b = f"dl-ui-{tag}-a", f"dl-ui-{tag}-b"
    driver.get(f"{console.url}/ui/waits")
    driver.execute_script("window.__sameDocument = true;")
    assert _shown(driver, {a, b}) is None

    one, two = _cross(console.backend_url, a, b), _cross(console.backend_url, b, a)
    workers += [one, two]
    tokens = {a: one.wait_event("holding")["token"], b: two.wait_event("holding")["token"]}
    one.send("go")
    two.send("go")
    wait_for(
        lambda: len(queue_entries(console.backend_url, a)) == 1 and len(queue_entries(console.backend_url, b)) == 1,
        10,
        "both processes to wait",
        interval=0.01,
    )
    closed = time.monotonic()
    shown = wait_for(lambda: _shown(driver, {a, b}), SHOWS_WITHIN, "the deadlock on the Waits page")
    print(f"\ndeadlock on the page {time.monotonic() - closed:.2f}s after the cycle closed")

    youngest = max(tokens, key=lambda name: tokens[name])
    assert sorted(shown["locks"]) == sorted([a, b])
    assert set(shown["owners"]) == {one.proc.pid, two.proc.pid}, "both owners marked, as waiter and as holder"
    assert shown["suggested"] == [youngest]
    assert shown["command"] == f"lockd break {youngest}"
    assert "waits for lock" in shown["text"] and shown["id"] in shown["text"]
    row = driver.execute_script(
        "return [...document.querySelectorAll('tr[data-wait-lock].in-deadlock')].map(r => r.dataset.waitLock);"
    )
    assert sorted(row) == sorted([a, b]), "both edges of the cycle marked in the wait-for graph"

    # The main page: the same deadlock in its banner, and both locks' rows marked.
    driver.get(f"{console.url}/?prefix=dl-ui-{tag}")
    banner = wait_for(lambda: _shown(driver, {a, b}), SHOWS_WITHIN, "the deadlock in the main page's banner")
    assert banner["id"] == shown["id"] and banner["suggested"] == [youngest]
    marked = driver.execute_script(
        "return [...document.querySelectorAll('tr[data-lock].in-deadlock')].map(r => r.dataset.lock);"
    )
    assert sorted(marked) == sorted([a, b])
    assert console.token not in driver.execute_script("return document.documentElement.outerHTML")

    driver.get(f"{console.url}/ui/waits")
    driver.execute_script("window.__sameDocument = true;")
    wait_for(lambda: _shown(driver, {a, b}), SHOWS_WITHIN, "the deadlock on the Waits page again")
    assert main(["break", youngest, "--url", console.url, "--admin-token", console.token]) == 0
    for proc in (one, two):
        proc.wait_event("done", timeout=30)
    wait_for(lambda: _shown(driver, {a, b}) is None, SHOWS_WITHIN, "the deadlock to leave the open list")
    wait_for(lambda: shown["id"] in _resolved(driver), SHOWS_WITHIN, "the deadlock among those that ended")
    assert driver.execute_script("return window.__sameDocument === true;"), "the page reloaded"
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 1280
