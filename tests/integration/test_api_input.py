"""Bad input never gets a 5xx: junk, huge and non-ASCII names, bad JSON, raw bytes, and a schema-driven fuzz.

Runs against its own etcd so the fuzz's random writes (statuses, breaks of random names) touch nobody else.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from lockd.config import Settings
from tests.etcd_process import EtcdMember
from tests.integration.api_server import ApiServer

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

BAD_NAMES = [
    "",
    "x" * 513,
    "y" * 10_000,
    "vol\u00e9",
    "\u00fcber-lock",
    "tab\there",
    "nul\x00byte",
    "del\x7f",
    "\U0001f512",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    member = EtcdMember("fuzz", tmp_path_factory.mktemp("etcd-fuzz") / "data")
    member.start()
    try:
        settings = Settings(backend_url=f"lockd+etcd3+http://{member.endpoint}?lease_ttl=3", admin_token=TOKEN)
        with ApiServer(settings) as srv:
            yield srv
    finally:
        member.stop()


@pytest.fixture
def http(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:12]) + f"-len{len(n)}")
def test_bad_lock_names_are_422_with_a_reason(http: httpx.Client, name: str) -> None:
    path = "/v1/locks/" + urllib.parse.quote(name, safe="")
    for answer in (http.get(path), http.delete(path, headers=AUTH)):
        assert answer.status_code == 422, (answer.status_code, answer.text[:200])
        assert answer.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"expected": "available", "target": "x"}',
        b'{"expected": [], "target": "x"}',
        b'{"expected": ["a"], "target": ""}',
        b'{"expected": ["a"], "target": 5}',
        b'{"expected": ["a"]}',
        b'{"expected": ["a"], "target": "b", "extra": 1}',
        ('{"expected": ["a"], "target": "' + "z" * 10_000 + '"}').encode(),
        b'{"expected": ["\\u0001"], "target": "b"}',
        b"\xff\xfe\x00",
    ],
)
def test_bad_transition_bodies_are_4xx(http: httpx.Client, body: bytes) -> None:
    answer = http.post(
        "/v1/status/volume/vol-1/transition", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:200])


@pytest.mark.parametrize(
    "path",
    [
        "/v1/status/volume/" + "i" * 300,
        "/v1/status/" + "k" * 10_000 + "/id",
        "/v1/status/vol%01ume/id",
        "/v1/status/volume/%00",
        "/v1/locks?prefix=%C3%A9",
        "/v1/locks?prefix=" + "p" * 600,
        "/v1/audit?name=%00",
        "/v1/audit?limit=-1",
        "/v1/audit?limit=abc",
        "/v1/status/volume/x/history?limit=-3",
    ],
)
def test_bad_paths_and_queries_are_4xx(http: httpx.Client, path: str) -> None:
    answer = http.get(path)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:200])


@pytest.mark.parametrize("raw", [b"/v1/locks/%FF%FE", b"/v1/locks/a%2Fb%00", b"/v1/locks/%", b"/v1/locks/\xc3\xa9"])
def test_raw_undecodable_paths_never_5xx(server: ApiServer, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET " + raw + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    status = int(status_line.split()[1])
    assert 400 <= status < 500, status_line


def test_openapi_document_is_valid_and_complete(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    schemathesis.openapi.from_dict(document).validate()  # raises on any violation of the OpenAPI meta-schema
    paths = document["paths"]
    for path, method in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/v1/locks", "get"),
        ("/v1/locks/{name}", "get"),
        ("/v1/locks/{name}", "delete"),
        ("/v1/members", "get"),
        ("/v1/status/{kind}/{id}", "get"),
        ("/v1/status/{kind}/{id}/transition", "post"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], (path, method)
    assert http.get("/docs").status_code == 200


def test_fuzz_from_the_openapi_schema_never_gives_5xx(server: ApiServer, http: httpx.Client) -> None:
    schema = schemathesis.openapi.from_dict(http.get("/openapi.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    failures: list[str] = []
    statuses: list[int] = []
    for operation in operations:
        _fuzz(
            server.url, operation, AUTH if operation.method.upper() in ("DELETE", "POST") else None, statuses, failures
        )
    assert not failures, failures
    assert len(statuses) >= 3 * len(operations), "the fuzz sent too few requests to mean anything"
    assert any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses), sorted(set(statuses))


def _fuzz(
    base_url: str, operation: Any, headers: dict[str, str] | None, statuses: list[int], failures: list[str]
) -> None:
    """A bounded number of generated requests for one operation: schema-valid shapes, then invalid ones."""
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url, headers=headers, timeout=10)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")

        try:
            check()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing to get wrong (no parameters): only then acceptable
