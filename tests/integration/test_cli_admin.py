"""`lockd locks`, `lockd break`, `lockd status` against a running admin API: output and exit codes 0/1/2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from lockd.cli.main import main
from lockd.config import Settings
from tests.etcd_process import EtcdMember, free_port
from tests.integration.api_server import ApiServer
from tests.procs import wait_for

TOKEN = "cli-token"


@pytest.fixture(scope="module")
def server(etcd: EtcdMember) -> Iterator[ApiServer]:
    settings = Settings(backend_url=f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=3", admin_token=TOKEN)
    with ApiServer(settings) as srv:
        yield srv


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _listed(server: ApiServer, name: str) -> bool:
    with server.client() as http:
        return http.get(f"/v1/locks/{name}").status_code == 200


def test_locks_prints_a_table_and_json(server, coordinator, lock_name, capsys) -> None:
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    wait_for(lambda: _listed(server, lock_name))
    code, out, _ = _run(capsys, "locks", "--url", server.url, "--prefix", lock_name)
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "HOLDER", "HOST", "PID", "HELD", "FOR", "TTL", "LEFT", "WAITERS"]
    assert row.split()[:4] == [lock_name, coordinator._member_id.decode(), os.uname().nodename, str(os.getpid())]
    code, out, _ = _run(capsys, "locks", "--url", server.url, "--prefix", lock_name, "--json")
    assert code == 0
    assert [(item["name"], item["token"]) for item in json.loads(out)["locks"]] == [(lock_name, lock.token)]
    lock.release()


def test_break_needs_the_token_then_releases(server, coordinator, lock_name, capsys, monkeypatch) -> None:
    monkeypatch.delenv("LOCKD_ADMIN_TOKEN", raising=False)
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    wait_for(lambda: _listed(server, lock_name))
    code, _, err = _run(capsys, "break", lock_name, "--url", server.url)
    assert code == 1 and "token" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "break", lock_name, "--url", server.url, "--admin-token", "wrong")
    assert code == 1 and "wrong" in err
    assert lock.is_still_owner()
    monkeypatch.setenv("LOCKD_ADMIN_TOKEN", TOKEN)
    code, _, _ = _run(capsys, "break", lock_name, "--url", server.url)
    assert code == 0
    assert not lock.is_still_owner()
    code, _, err = _run(capsys, "break", lock_name, "--url", server.url)
    assert code == 1 and "not held" in err


def test_a_stale_token_file_is_named_when_refused(server, coordinator, lock_name, capsys, monkeypatch, tmp_path):
    """A sidecar that once ran without a token left its token file; after the operator configured a token, the CLI
    on the host still finds the old file. The refusal names the file and what to pass instead; nothing changes."""
    monkeypatch.delenv("LOCKD_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("LOCKD_STATE_DIR", str(tmp_path))
    (tmp_path / "admin_token").write_text("made-before-the-token-was-configured\n")
    lock = coordinator.get_lock(lock_name)
    assert lock.acquire()
    wait_for(lambda: _listed(server, lock_name))
    code, _, err = _run(capsys, "break", lock_name, "--url", server.url)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert str(tmp_path / "admin_token") in err and "--admin-token-file" in err, err
    assert "made-before" not in err  # a secret, even a stale one, is never printed
    assert lock.is_still_owner()
    lock.release()


def test_bad_input_is_exit_2_with_one_line(server, capsys) -> None:
    for argv in (
        ["break", "caf\u00e9"],
        ["break", "x" * 600],
        ["status", "volume", ""],
        ["locks", "--prefix", "\u00e9"],
    ):
        code, out, err = _run(capsys, *argv, "--url", server.url)
        assert code == 2, argv
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_status_shows_a_status_or_says_none(server, capsys) -> None:
    volume = f"vol-{os.getpid()}-{free_port()}"
    code, _, err = _run(capsys, "status", "volume", volume, "--url", server.url)
    assert code == 1 and "no status" in err
    with server.client() as http:
        body = {"expected": [None], "target": "available"}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert http.post(f"/v1/status/volume/{volume}/transition", json=body, headers=headers).status_code == 200
    code, out, _ = _run(capsys, "status", "volume", volume, "--url", server.url, "--history")
    assert code == 0
    assert out.startswith(f"volume {volume}: available (revision ")
    assert "None -> available" in out


def test_unreachable_sidecar_is_exit_1(capsys) -> None:
    code, _, err = _run(capsys, "locks", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot reach" in err


def test_console_script_exit_code_and_stderr(server) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lockd.cli.main",
            "break",
            "never-held-lock",
            "--url",
            server.url,
            "--admin-token",
            TOKEN,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "lockd: lock 'never-held-lock' is not held; nothing to break"
