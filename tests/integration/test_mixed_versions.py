"""A rolling upgrade of the lock clients: processes on an older lockd (PREVIOUS, taken from this repository's own
history) and on this one lock the same names. Two older trees: the lockd before the grant, and the last one whose
grant marks were JSON (its processes cannot read a packed mark, so they read the queue at their release).

The grant changed the protocol between holders: a release may now hand the lock to the next lockd waiter by
writing the lock key for it, and a queue entry carries the holder value it would get. An older waiter knows
nothing of grants, so a newer releaser grants only to entries that carry a holder value (an older waiter's entry
is empty) and otherwise frees the lock as before; an older releaser frees the lock as before, which a newer
waiter sees as it always did. The tests, old and new in both orders:
- FIFO: waiters queued one by one, versions alternating, are served in their order; nobody is left behind;
- contention: old and new processes with threads on one name, a read-sleep-write counter exact, the history
  checker finds no overlap and tokens that grow.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests import history
from tests.etcd_process import queue_entries
from tests.procs import REPO, WorkerProcess, wait_for

#: main before the grant (the last commit whose release always deleted the lock key), and main before grant marks
#: were packed (JSON marks; it reads a packed one as unreadable).
PREVIOUS = {"before-grant": "d3e9288", "json-marks": "e060cde"}


@pytest.fixture(scope="module", params=list(PREVIOUS))
def previous(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PREVIOUS tree (lockd and its test helpers), from ``git archive``: what a node not yet upgraded runs."""
    tree = tmp_path_factory.mktemp(request.param)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS[request.param], "lockd", "drivers_shim", "tests"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def test_waiters_of_both_versions_are_served_in_arrival_order(
    etcd_url: str, lock_name: str, previous: Path, workers: list[WorkerProcess]
) -> None:
    trees = [REPO, REPO, previous, REPO, previous, previous]  # after an old holder, versions mixed
    holder = WorkerProcess(etcd_url, lock_name, "hold", tree=previous)
    workers.append(holder)
    holder.wait_event("acquired", timeout=20)
    waiters = []
    for i, tree in enumerate(trees):
        waiter = WorkerProcess(etcd_url, lock_name, "hold", tree=tree)
        workers.append(waiter)
        waiters.append(waiter)
        wait_for(lambda i=i: len(queue_entries(etcd_url, lock_name)) == i + 1, 20, f"waiter {i} to queue")
    holder.finish()
    for i, waiter in enumerate(waiters):
        event = waiter.wait_event("acquired", timeout=20)
        assert event["event"] == "acquired", (i, event)
        for later in waiters[i + 1 :]:
            assert later.events.empty(), f"a waiter behind {i} was served before it"
        waiter.finish()
        assert waiter.wait_event("released", timeout=20)["ok"] is True


@pytest.mark.parametrize("holder_first", ["new", "old"])
def test_grant_and_free_between_versions(
    etcd_url: str, lock_name: str, previous: Path, workers: list[WorkerProcess], holder_first: str
) -> None:
    """A new releaser with an old waiter behind it (it must free the lock, not grant it), an old releaser with a
    new waiter (which takes the freed lock), then new to new (a grant)."""
    order = [REPO, previous, REPO, REPO] if holder_first == "new" else [previous, REPO, previous, REPO]
    procs = []
    for i, tree in enumerate(order):
        proc = WorkerProcess(etcd_url, lock_name, "hold", tree=tree)
        workers.append(proc)
        procs.append(proc)
        if i == 0:
            proc.wait_event("acquired", timeout=20)
        else:
            wait_for(lambda i=i: len(queue_entries(etcd_url, lock_name)) >= i, 20, f"process {i} to queue")
    tokens: list[int] = []
    for i, proc in enumerate(procs):
        if i:
            event = proc.wait_event("acquired", timeout=20)
            tokens.append(event["token"])
        proc.finish()
        assert proc.wait_event("released", timeout=20)["ok"] is True
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def test_old_and_new_processes_contend_exactly(
    etcd_url: str, lock_name: str, previous: Path, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    path, counter = tmp_path / "history.jsonl", tmp_path / "counter"
    cycles, threads = 15, 2
    for tree in (REPO, previous, REPO, previous):
        workers.append(
            WorkerProcess(
                etcd_url, lock_name, "contend", tree=tree, history=str(path), counter=str(counter),
                cycles=cycles, hold=0.002, threads=threads,
            )
        )  # fmt: skip
    errors = []
    for w in workers:
        errors += w.wait_event("done", timeout=120)["errors"]
    total = len(workers) * cycles * threads
    assert errors == []
    assert int(counter.read_text()) == total, "lost update: two holders at once"
    holds = history.load_holds(path)
    assert len(holds) == total
    assert history.check(holds) == []
