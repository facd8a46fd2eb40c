"""The stage of the console screenshots (scripts/console_screenshot.py, scripts/screenshot_deadlock_timeline.py):
a private etcd, a real `lockd serve` on it with an admin token, and Debian's headless chromium to capture it.

The sidecar is started and awaited by the tests' own helper (tests.procs.lockd_serve), so a script waits for
it as the tests do; the scripts then stage their scenes with real lockd clients.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lockd.embedded import EmbeddedEtcd  # noqa: E402
from tests.browser.conftest import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS  # noqa: E402
from tests.procs import lockd_serve, wait_for  # noqa: E402


@dataclass(frozen=True)
class Stage:
    address: str  # the private etcd's HOST:PORT (for stock tooz URLs)
    url: str  # the lockd backend URL the scene's clients use
    base: str  # the sidecar's admin API and console
    token: str  # its admin token


@contextlib.contextmanager
def staged(work: Path, lease_ttl: int) -> Iterator[Stage]:
    """A private etcd under ``work`` and `lockd serve` from this tree on it (log in ``work/serve.log``), yielded
    once its /readyz answers 200; both stopped on exit. Clients' leases last ``lease_ttl`` seconds."""
    etcd = EmbeddedEtcd(work / "etcd")
    address = etcd.start().split("://", 1)[1].split("?", 1)[0]
    try:
        url = f"lockd+etcd3+http://{address}?lease_ttl={lease_ttl}"
        token = uuid.uuid4().hex
        env = {**os.environ, "LOCKD_ADMIN_TOKEN": token, "PYTHONPATH": str(REPO)}
        with lockd_serve(work, "--backend-url", url, "--state-dir", str(work / "serve"), env=env) as base:
            yield Stage(address=address, url=url, base=base, token=token)
    finally:
        etcd.stop()


def browser(work: Path, window: tuple[int, int]) -> Any:
    """Headless chromium (a Selenium driver) with a ``window`` (width, height) viewport, its profile under ``work``
    and its clock in Europe/Berlin, so every picture shows the same times. The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag.replace("1280,900", f"{window[0]},{window[1]}"))
    options.add_argument(f"--user-data-dir={work / 'profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Europe/Berlin"})
    return driver


def wait_live(driver: Any) -> None:
    """Until the page's live part has refreshed once (its ``.refresh`` line says so)."""
    wait_for(lambda: "Live: updated" in driver.find_element("css selector", ".refresh").text, 10, "the page")
