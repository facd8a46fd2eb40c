"""A holder paused (SIGSTOP) past its lease cannot write a status after it resumes; the new holder can.

This is the Jepsen case for etcd locks: the lease expired while the holder was frozen, another process took
the lock and wrote, then the frozen process wakes up believing it still holds the lock. Its fenced writes,
with the lock object and with the bare integer token, are refused; the status keeps the new holder's value.

Run as ``python -m tests.integration.test_status_fencing LOCK_URL STATUS_URL LOCK_NAME VOLUME_ID`` it is the
child holder: it prints JSON lines and waits for one line on stdin before it writes.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import tooz.coordination

from lockd.status import FENCED, NOT_OWNER, open_store

pytestmark = pytest.mark.both_etcd


def _child(lock_url: str, status_url: str, lock_name: str, vid: str) -> None:
    coord = tooz.coordination.get_coordinator(lock_url, f"stale-{uuid.uuid4().hex[:6]}".encode())
    coord.start(start_heart=True)
    store = open_store(status_url)
    lock = coord.get_lock(lock_name)
    assert lock.acquire(blocking=10)
    token = lock.token
    first = store.compare_and_set("volume", vid, ["available"], "available", fence=lock)
    print(json.dumps({"event": "acquired", "token": token, "wrote": first.ok}), flush=True)
    sys.stdin.readline()  # the parent stops us (SIGSTOP) here, then resumes us and asks us to write
    with_lock = store.compare_and_set("volume", vid, ["available", "deleting"], "error", fence=lock)
    with_token = store.compare_and_set("volume", vid, ["available", "deleting"], "error", fence=token)
    answers = {name: [r.ok, r.current, r.reason] for name, r in (("lock", with_lock), ("token", with_token))}
    print(json.dumps({"event": "wrote", **answers}), flush=True)
    store.close()
    coord.stop()


def _next_event(proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"child {proc.pid} printed nothing within {timeout}s"
    line = proc.stdout.readline()
    assert line, f"child exited with {proc.poll()}"
    return json.loads(line)


@pytest.mark.parametrize("backend", ["etcd", "sqlite"])
def test_paused_holder_write_is_refused_after_new_holder_wrote(
    backend: str, etcd_url: str, tmp_path: Path, coordinator: tooz.coordination.CoordinationDriver, lock_name: str
) -> None:
    status_url = etcd_url if backend == "etcd" else f"sqlite:///{tmp_path}/fence.db"
    store = open_store(status_url)
    vid = str(uuid.uuid4())
    assert store.compare_and_set("volume", vid, [None], "available").ok
    child_lock_url = etcd_url.replace("lease_ttl=3", "lease_ttl=2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.test_status_fencing", child_lock_url, status_url, lock_name, vid],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    new_lock = coordinator.get_lock(lock_name)
    try:
        acquired = _next_event(proc)
        assert acquired["wrote"] is True
        proc.send_signal(signal.SIGSTOP)
        # The child's lease runs out while it is frozen; we get the lock then (blocking has a deadline).
        assert new_lock.acquire(blocking=30), "the paused holder's lease never expired"
        assert new_lock.token > acquired["token"]
        assert store.compare_and_set("volume", vid, ["available"], "deleting", fence=new_lock).ok
        proc.send_signal(signal.SIGCONT)
        assert proc.stdin is not None
        proc.stdin.write("write\n")
        proc.stdin.flush()
        wrote = _next_event(proc)
        assert wrote["lock"] == [False, "deleting", NOT_OWNER]
        assert wrote["token"] == [False, "deleting", FENCED]
        assert store.get_record("volume", vid)[0] == "deleting"  # type: ignore[index]
        # The new holder keeps going; the stale holder left no trace in the history.
        assert store.compare_and_set("volume", vid, ["deleting"], "deleted", fence=new_lock).ok
        history = store.history("volume", vid)
        assert [(e["to"], e["token"]) for e in history[:2]] == [
            ("deleted", new_lock.token),
            ("deleting", new_lock.token),
        ]
        assert "error" not in [e["to"] for e in history]
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(10)
        new_lock.release()
        store.close()


if __name__ == "__main__":
    _child(*sys.argv[1:5])
