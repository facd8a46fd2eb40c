"""``/v1/status``: read, compare-and-set transitions (200 / 409 with current), history, admin token on writes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from lockd.config import Settings
from tests.etcd_process import EtcdMember
from tests.integration.api_server import ApiServer

TOKEN = "status-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(etcd: EtcdMember) -> Iterator[ApiServer]:
    settings = Settings(backend_url=f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=3", admin_token=TOKEN)
    with ApiServer(settings) as srv:
        yield srv


@pytest.fixture
def http(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def volume() -> str:
    return f"vol-{uuid.uuid4()}"


def _move(http: httpx.Client, volume: str, expected: list, target: str, headers=AUTH) -> httpx.Response:
    return http.post(
        f"/v1/status/volume/{volume}/transition", json={"expected": expected, "target": target}, headers=headers
    )


def test_unknown_resource_is_404(http: httpx.Client, volume: str) -> None:
    assert http.get(f"/v1/status/volume/{volume}").status_code == 404


def test_transition_creates_moves_and_reads_back(http: httpx.Client, volume: str) -> None:
    created = _move(http, volume, [None], "available")
    assert created.status_code == 200
    assert created.json()["status"] == "available"
    moved = _move(http, volume, ["available", "error"], "deleting")
    assert moved.status_code == 200
    assert moved.json()["revision"] > created.json()["revision"]
    read = http.get(f"/v1/status/volume/{volume}").json()
    assert read == {"kind": "volume", "id": volume, "status": "deleting", "revision": moved.json()["revision"]}
    history = http.get(f"/v1/status/volume/{volume}/history").json()["history"]
    assert [(h["from"], h["to"]) for h in history][:2] == [("available", "deleting"), (None, "available")]


def test_transition_from_an_unexpected_status_is_409_with_current(http: httpx.Client, volume: str) -> None:
    assert _move(http, volume, [None], "in-use").status_code == 200
    conflict = _move(http, volume, ["available", "error"], "deleting")
    assert conflict.status_code == 409
    assert conflict.json()["current"] == "in-use"
    assert http.get(f"/v1/status/volume/{volume}").json()["status"] == "in-use"


def test_transition_needs_the_admin_token(http: httpx.Client, volume: str) -> None:
    assert _move(http, volume, [None], "available", headers={}).status_code == 401
    assert _move(http, volume, [None], "available", headers={"Authorization": "Bearer no"}).status_code == 403
    assert http.get(f"/v1/status/volume/{volume}").status_code == 404, "a refused write must write nothing"
