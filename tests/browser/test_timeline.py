"""The console's timeline and hot-locks pages in a real browser, drawing holds taken by other processes.

A holder and a waiter on one lock: the timeline's row for it shows the hold in progress and the queue behind it,
then (without a reload) the first hold released and the second one in progress, each bar naming its owner.
The hot-locks page lists the lock's template with its acquisitions.
Above the rows a key names what each colour drawn stands for: the host (a row per lock) or the template (a row
per host).
"""

from __future__ import annotations

import socket
import uuid

import pytest

from lockd.api.profile import fold
from tests.browser.conftest import Console
from tests.procs import WorkerProcess, wait_for

pytestmark = pytest.mark.browser

SHOWS_WITHIN = 5.0  # seconds: generous, the page refreshes about every second


def _lane(driver, name: str) -> dict | None:
    """The timeline row of ``name`` as the reader sees it: the bars' tooltips and the queue count."""
    return driver.execute_script(
        """const row = [...document.querySelectorAll('tr[data-row]')].find(r => r.dataset.row === arguments[0]);
           if (!row) return null;
           const bars = [...row.querySelectorAll('rect[data-hold]')];
           const queued = row.querySelector('[data-queued]');
           return {titles: bars.map(b => b.querySelector('title').textContent),
                   widths: bars.map(b => b.getBoundingClientRect().width),
                   queued: queued ? Number(queued.dataset.queued) : 0};""",
        name,
    )


def test_the_timeline_shows_a_hold_the_queue_behind_it_and_the_handover_live(
    driver, console: Console, workers: list
) -> None:
    name = f"tl-{uuid.uuid4()}"
    driver.get(f"{console.url}/ui/timeline?prefix={name}&minutes=1")
    driver.execute_script("window.__sameDocument = true;")
    assert _lane(driver, name) is None

    first = WorkerProcess(console.backend_url, name, "hold")
    workers.append(first)
    first_token = first.wait_event("acquired")["token"]
    second = WorkerProcess(console.backend_url, name, "hold")
    workers.append(second)
    lane = wait_for(lambda: (r := _lane(driver, name)) and r["queued"] == 1 and r, 30, "the hold and its waiter")
    (title,) = lane["titles"]
    assert f"token {first_token}," in title and f"pid {first.proc.pid} " in title and "so far" in title
    assert all(width >= 1 for width in lane["widths"]), "a bar too thin to see"

    first.finish()
    first.wait_event("released")
    second_token = second.wait_event("acquired")["token"]

    def handed_over() -> dict | None:
        row = _lane(driver, name)
        return row if row and len(row["titles"]) == 2 and row["queued"] == 0 else None

    lane = wait_for(handed_over, SHOWS_WITHIN, "the handover on the timeline")
    done, held = sorted(lane["titles"], key=lambda t: "so far" in t)
    assert f"token {first_token}," in done and done.endswith("released")
    assert f"token {second_token}," in held and f"pid {second.proc.pid} " in held
    assert driver.execute_script("return window.__sameDocument === true;"), "the page reloaded"
    second.finish()
    second.wait_event("released")

    driver.get(f"{console.url}/ui/hot")
    acquisitions = driver.execute_script(
        """const row = document.querySelector('tr[data-template="tl-{id}"]');
           return row ? Number(row.querySelector('[data-acquisitions]').innerText) : null;"""
    )
    assert acquisitions is not None and acquisitions >= 2
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 1280


def _key_and_fills(driver) -> dict:
    """The colour key above the rows (label -> colour) and every row's bar colours, as drawn."""
    return driver.execute_script(
        """const key = Object.fromEntries([...document.querySelectorAll('[data-key] [data-colour]')]
               .map(k => [k.textContent.trim(), k.dataset.colour]));
           const rows = Object.fromEntries([...document.querySelectorAll('tr[data-row]')]
               .map(r => [r.dataset.row, [...r.querySelectorAll('rect[data-hold]')].map(b => b.getAttribute('fill'))]));
           const swatches = [...document.querySelectorAll('[data-key] [data-colour] rect')]
               .map(r => r.getAttribute('fill'));
           return {key, rows, swatches};"""
    )


def test_the_timeline_key_names_the_host_or_template_of_every_colour_drawn(
    driver, console: Console, workers: list
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"key-{tag}-{uuid.uuid4()}-{part}" for part in ("a", "b")]
    holders = [WorkerProcess(console.backend_url, name, "hold") for name in names]
    workers += holders
    for holder in holders:
        holder.wait_event("acquired")

    # A row per lock, bars coloured by host: the key names the workers' host (this machine) with that colour.
    driver.get(f"{console.url}/ui/timeline?prefix=key-{tag}&minutes=1")
    drawn = wait_for(lambda: (d := _key_and_fills(driver)) and len(d["rows"]) == 2 and d, SHOWS_WITHIN, "both rows")
    assert list(drawn["key"]) == [socket.gethostname()], drawn
    assert {fill for fills in drawn["rows"].values() for fill in fills} == set(drawn["key"].values())
    assert drawn["swatches"] == list(drawn["key"].values()), "a swatch not in its label's colour"

    # A row per host, bars coloured by template: the key names both templates, in two colours, both drawn.
    driver.get(f"{console.url}/ui/timeline?prefix=key-{tag}&minutes=1&by=host")
    drawn = wait_for(lambda: (d := _key_and_fills(driver)) and len(d["key"]) == 2 and d, SHOWS_WITHIN, "the key")
    assert sorted(drawn["key"]) == sorted(fold(name) for name in names), drawn
    assert len(set(drawn["key"].values())) == 2, "two templates in one colour"
    assert list(drawn["rows"]) == [socket.gethostname()], drawn
    assert sorted(drawn["rows"][socket.gethostname()]) == sorted(drawn["key"].values())
    for holder in holders:
        holder.finish()
        holder.wait_event("released")
