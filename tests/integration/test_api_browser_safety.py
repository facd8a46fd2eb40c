"""The admin API is safe to have a browser near: foreign Host headers refused, mutations always need a token
(`lockd serve` makes one when none is configured, and the CLI on this host uses it), no framing, own assets only.

Each refusal is checked for its reason and for changing nothing (the lock still held, the status unwritten).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lockd.api.browser_guard import HostAllowList, host_name
from lockd.config import Settings
from tests.etcd_process import EtcdMember
from tests.integration.api_server import ApiServer
from tests.procs import lockd_serve, wait_for

TOKEN = "browser-safety-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(etcd: EtcdMember) -> Iterator[ApiServer]:
    settings = Settings(
        backend_url=f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=3",
        admin_token=TOKEN,
        allowed_hosts=("lockd.mgmt.example",),
    )
    with ApiServer(settings) as srv:
        yield srv


def _held(http: httpx.Client, name: str) -> bool:
    return http.get(f"/v1/locks/{name}").status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:7170", "127.0.0.1.nip.io", "localhost.evil.example"])
def test_a_foreign_host_header_is_refused_with_a_reason_and_changes_nothing(
    http: httpx.Client, server: ApiServer, coordinator, lock_name: str, host: str
) -> None:
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    wait_for(lambda: _held(http, lock_name))
    foreign = {"Host": host}
    for answer in (
        http.get("/", headers=foreign),
        http.get("/ui/waits", headers=foreign),
        http.get("/v1/locks", headers=foreign),
        http.delete(f"/v1/locks/{lock_name}", headers={**AUTH, **foreign}),  # even with the right token
        http.post(
            f"/v1/status/volume/{lock_name}/transition",
            json={"expected": [None], "target": "available"},
            headers={**AUTH, **foreign},
        ),
    ):
        assert answer.status_code == 400, (answer.request.method, answer.request.url, answer.text)
        assert "is not a name this lockd answers for" in answer.json()["detail"]
        assert answer.headers["x-frame-options"] == "DENY"
    assert lock.is_still_owner(), "a refused break changed the lock"
    assert _held(http, lock_name)
    assert http.get(f"/v1/status/volume/{lock_name}").status_code == 404, "a refused transition wrote a status"
    lock.release()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "LOCALHOST:1", "[::1]:7170", "lockd.mgmt.example"])
def test_own_names_are_served(http: httpx.Client, host: str) -> None:
    assert http.get("/healthz", headers={"Host": host}).status_code == 200


def test_a_malformed_host_header_is_refused(http: httpx.Client) -> None:
    answer = http.get("/healthz", headers={"Host": "localhost:notaport"})
    assert answer.status_code == 400 and "malformed Host header" in answer.json()["detail"]


def test_host_rules_follow_the_bind_address() -> None:
    specific = HostAllowList(Settings(host="10.1.2.3"))
    assert specific.allows("10.1.2.3") and specific.allows("localhost") and specific.allows("::1")
    assert not specific.allows("10.1.2.4"), "an IP literal that is not ours on a specific bind"
    assert not specific.allows("node1.example")
    wildcard = HostAllowList(Settings(host="0.0.0.0", allowed_hosts=("Lockd.Example.",)))
    assert wildcard.allows("10.1.2.4") and wildcard.allows("lockd.example")
    assert not wildcard.allows("evil.example"), "a wildcard bind still refuses names it was not given"
    assert host_name("[::1]:80") == "::1" and host_name("[::1]x") is None and host_name(":80") is None


@pytest.mark.parametrize(
    "path", ["/", "/ui/waits", "/v1/locks", "/v1/waits", "/healthz", "/docs", "/docs/assets/swagger-ui-bundle.js",
             "/ui/static/console.js", "/nowhere"],
)  # fmt: skip
def test_every_answer_forbids_framing_and_foreign_assets(http: httpx.Client, path: str) -> None:
    answer = http.get(path)
    assert answer.headers["x-frame-options"] == "DENY"
    csp = answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert answer.headers["x-content-type-options"] == "nosniff"
    # /docs included: its viewer comes from this host (lockd.api.api_docs), started by a script of ours
    assert "default-src 'self'" in csp and "script-src 'self';" in csp and "http" not in csp


def test_the_api_page_names_no_other_origin_and_redoc_is_gone(http: httpx.Client) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    assert "http" not in page.text and "<script>" not in page.text, page.text  # no CDN, no inline script
    assert http.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert http.get("/redoc").status_code == 404


def test_serve_without_a_token_makes_one_the_cli_on_this_host_uses(
    etcd: EtcdMember, tmp_path: Path, coordinator, lock_name: str
) -> None:
    """The issue's report, as a new user would try it: defaults (loopback, no token) left mutations open."""
    state = tmp_path / "state"
    env = {**os.environ, "LOCKD_STATE_DIR": str(state)}
    env.pop("LOCKD_ADMIN_TOKEN", None)
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    with lockd_serve(tmp_path, "--backend-url", f"lockd+etcd3+http://{etcd.endpoint}", env=env) as url:
        token_file = state / "admin_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        with httpx.Client(base_url=url, timeout=10) as http:
            wait_for(lambda: _held(http, lock_name))
            assert http.delete(f"/v1/locks/{lock_name}").status_code == 401
            transition = {"expected": [None], "target": "available"}
            assert http.post(f"/v1/status/volume/{lock_name}/transition", json=transition).status_code == 401
            assert http.get(f"/v1/status/volume/{lock_name}").status_code == 404, "an unauthenticated write landed"
            assert lock.is_still_owner(), "an unauthenticated break landed"
            assert token not in http.get("/").text + http.get("/v1/locks").text + http.get("/openapi.json").text

            cli = [sys.executable, "-m", "lockd.cli.main", "break", lock_name, "--url", url]
            other_state = {**env, "LOCKD_STATE_DIR": str(tmp_path / "other")}
            elsewhere = subprocess.run(cli, env=other_state, capture_output=True)
            assert elsewhere.returncode == 1 and b"admin token is required" in elsewhere.stderr
            assert lock.is_still_owner()
            done = subprocess.run(cli, env=env, capture_output=True)
            assert done.returncode == 0, done.stderr
            assert not lock.is_still_owner()
    with lockd_serve(tmp_path, "--backend-url", f"lockd+etcd3+http://{etcd.endpoint}", env=env):
        assert token_file.read_text().strip() == token, "a restart must keep the token the CLI knows"
    assert token not in (tmp_path / "serve.log").read_text()
