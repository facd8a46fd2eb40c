"""``/docs`` in a real browser: Swagger UI, served from this host (lockd.api.api_docs), renders every operation of
the API under the page's policy (our scripts only), and the browser fetches nothing from another origin.

What makes it fail: FastAPI's own page (its viewer and fonts from a CDN; here, with no CDN reachable, nothing
renders), or a policy that blocks the viewer or our starter script.
"""

from __future__ import annotations

import urllib.parse

import pytest

from tests.browser.conftest import Console
from tests.procs import wait_for

pytestmark = pytest.mark.browser

OPERATIONS = "return [...document.querySelectorAll('.opblock-summary-path')].map(e => e.getAttribute('data-path'))"


def test_the_api_page_renders_every_operation_from_this_host_only(driver, console: Console) -> None:
    driver.get(f"{console.url}/docs")
    wait_for(lambda: len(driver.execute_script(OPERATIONS)) >= 8, 20, "Swagger UI to list the API's operations")
    paths = set(driver.execute_script(OPERATIONS))
    assert {"/v1/locks", "/v1/locks/{name}", "/v1/status/{kind}/{id}/transition", "/readyz"} <= paths, paths
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    ours = urllib.parse.urlsplit(console.url).netloc
    assert fetched and all(urllib.parse.urlsplit(url).netloc == ours for url in fetched), fetched
    assert "/openapi.json" in {urllib.parse.urlsplit(url).path for url in fetched}, fetched
