"""Fixtures for tests on namespaced test hosts: skipped with the reason where they cannot run (not root, no
iptables), failed instead under ``CI=true``, where a skip would hide that the tests did not run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.netns import TestNetwork, unavailable


def require_netns() -> None:
    reason = unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)


@pytest.fixture
def network(request: pytest.FixtureRequest) -> Iterator[TestNetwork]:
    """Hosts named by the test's ``hosts`` marker (default ``a``, ``b``); nothing of them is left afterwards."""
    require_netns()
    marker = request.node.get_closest_marker("hosts")
    net = TestNetwork(marker.args if marker else ("a", "b")).create()
    yield net
    net.close()
    assert net.leftovers() == [], f"left behind: {net.leftovers()}"
