"""Debian's headless chromium, driven through its chromedriver by Selenium, against a real `lockd serve`.

Nothing here downloads a browser or a driver: both come from Debian (scripts/install-system-deps.sh installs
``chromium`` and ``chromium-driver``), and Selenium is given the driver's path, so its own driver manager never
runs. Without them the tests skip with the reason, except under ``CI=true``, where a missing browser fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.etcd_process import EtcdMember
from tests.procs import lockd_serve

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Flags that work in containers and CI (no sandbox as root, no GPU) and keep the browser off the network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def browser_missing() -> str | None:
    """Why Chromium cannot be driven here (Debian's chromium, chromium-driver, Selenium), or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: apt-get install {package} (scripts/install-system-deps.sh does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the project's test extra has it)"
    return None


@pytest.fixture(scope="session")
def browser_available() -> None:
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser tests: {reason}")
    pytest.skip(reason)


@dataclass(frozen=True)
class Console:
    url: str
    token: str
    backend_url: str


@pytest.fixture(scope="module")
def console(browser_available: None, etcd: EtcdMember, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """A real `lockd serve` on the session etcd with a known admin token."""
    state = tmp_path_factory.mktemp("console-serve")
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "LOCKD_ADMIN_TOKEN": token, "LOCKD_STATE_DIR": str(state / "state")}
    backend_url = f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=5"
    with lockd_serve(state, "--backend-url", backend_url, env=env) as url:
        yield Console(url, token, backend_url)


@pytest.fixture(scope="module")
def driver(browser_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One headless chromium for the module, in a fresh profile, in Tokyo's time zone (UTC+9, no DST), so a
    page that showed UTC where local time belongs would show the wrong hour."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    service = Service(executable_path=CHROMEDRIVER, log_output=sys.stderr if os.environ.get("LOCKD_DEBUG") else None)
    browser = webdriver.Chrome(service=service, options=options)
    try:
        browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Tokyo"})
        browser.set_page_load_timeout(20)
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(Path(options.arguments[-1].split("=", 1)[1]), ignore_errors=True)
