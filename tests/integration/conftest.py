"""Fixtures shared by the API tests: an HTTP client for the module's ``server`` (an ApiServer fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.api_server import ApiServer


@pytest.fixture
def http(server: ApiServer) -> Iterator[httpx.Client]:
    """A client of the requesting module's own ``server`` fixture."""
    with server.client() as client:
        yield client
