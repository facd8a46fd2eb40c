"""The patched oslo lock never excludes less than the file lock it replaces, on real etcd.

On one host (one ``lock_path``), a process with the patch and one without it (``cinder-manage``, a service
whose unit lacks the drop-in, the old process of a rolling restart) must still exclude each other: the patched
lock takes oslo's own file lock first. Before that, the patched process took the lockd lock alone, the
unpatched one the file alone, and 150 + 150 increments ended at 258.

When the lockd part cannot be had (etcd gone while the file lock is held and the lockd acquire waits), the
caller gets a clear error and the file lock is freed: no host-local lock outlives a failed acquire.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import tooz.coordination
from oslo_concurrency import lockutils

from tests.etcd_process import EtcdMember
from tests.integration.test_lockutils_scope import file_lock_is_held
from tests.procs import ChildProcess, wait_for
from tests.race import new_ids, run_race


@pytest.mark.parametrize(("runtime", "threads"), [("threads", 8), ("eventlet", 32)])
def test_a_patched_and_an_unpatched_process_on_one_host_exclude_each_other(
    etcd_url: str, tmp_path: Path, runtime: str, threads: int
) -> None:
    """20 rounds; each releases the threads (or green threads) of both processes at one instant on a fresh
    name; every one of them increments a shared counter under ``lockutils.lock(..., external=True)``."""
    lock_path, counters = tmp_path / "lock_path", tmp_path / "counters"
    lock_path.mkdir()
    counters.mkdir()
    ids = new_ids()
    increments = 3
    rounds = run_race(
        "oslo_counter",
        ids,
        etcd_url,
        per_process=[
            {"patch_lockutils": True, "runtime": runtime, "threads": threads},
            {"patch_lockutils": False, "runtime": "threads", "threads": 8},
        ],
        counter_dir=str(counters),
        lock_path=str(lock_path),
        increments=increments,
    )
    for rid, results in zip(ids, rounds, strict=True):
        kinds = sorted({r["external_lock"] for r in results})
        assert kinds == ["drivers_shim.lockutils_patch", "oslo_concurrency.lockutils"], kinds
        expected = sum(r["increments"] for r in results)
        assert expected == (threads + 8) * increments
        assert int((counters / rid).read_text()) == expected, f"round {rid}: lost updates"


# A patched process of one host: takes one oslo external lock and says how it ended.
WAITER = r"""
import json, sys, time
from oslo_concurrency import lockutils

name, lock_path = sys.argv[1], sys.argv[2]
print(json.dumps({"event": "started"}), flush=True)
started = time.monotonic()
try:
    with lockutils.lock(name, "cinder-", external=True, lock_path=lock_path):
        print(json.dumps({"event": "held"}), flush=True)
except Exception as exc:
    print(json.dumps({"event": "failed", "type": type(exc).__name__, "message": str(exc),
                      "after": time.monotonic() - started}), flush=True)
"""


def test_etcd_gone_while_waiting_is_a_clear_error_and_frees_the_file_lock(
    own_etcd: EtcdMember, tmp_path: Path, lock_name: str, workers: list[ChildProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"lockd+etcd3+http://{own_etcd.endpoint}?lease_ttl=3&timeout=1"
    lock_path = tmp_path / "lock_path"
    lock_path.mkdir()
    name = f"cinder-{lock_name}"

    elsewhere = tooz.coordination.get_coordinator(url, b"another-host")  # holds the lockd lock on another host
    elsewhere.start(start_heart=True)
    try:
        assert elsewhere.get_lock(name).acquire(blocking=False)
        for var in [v for v in os.environ if v.startswith(("LOCKD_", "OSLO_"))]:
            monkeypatch.delenv(var)
        monkeypatch.setenv("LOCKD_PATCH_LOCKUTILS", "1")
        monkeypatch.setenv("LOCKD_BACKEND_URL", url)
        waiter = ChildProcess("-c", WAITER, lock_name, str(lock_path))
        workers.append(waiter)
        waiter.wait_event("started")
        # The file part is taken, the lockd part is awaited.
        wait_for(lambda: file_lock_is_held(lock_path / name), 30, "the patched waiter to take its file lock")
        time.sleep(0.5)
        assert file_lock_is_held(lock_path / name)
        assert waiter.events.empty(), "the waiter got past a lock held on another host"

        own_etcd.stop()  # the fault, while the other host still holds the lockd lock
        failed = waiter.wait_event("failed", "held", timeout=60)
    finally:
        try:
            elsewhere.stop()
        except tooz.ToozError:
            pass  # etcd is gone: its lease runs out with the cluster
    assert failed["event"] == "failed", failed
    assert failed["type"] in ("BackendTimeout", "BackendError", "SessionExpired"), failed
    assert "etcd" in failed["message"], failed
    # At once: the next process of the host (unpatched here) gets the file lock without waiting.
    probe = lockutils.InterProcessLock(str(lock_path / name))
    assert probe.acquire(blocking=False), "the failed acquire left this host's file lock held"
    probe.release()
    print(json.dumps(failed))
