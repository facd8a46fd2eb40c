"""Fencing tokens across etcd cluster lifetimes (lockd.epoch), with real etcd and a live SQL status store.

A rebuilt cluster starts its revisions (tokens) again at 1 and keeps its cluster_id; a restored snapshot takes
them back to the snapshot's. The store must never compare tokens of two lifetimes: it refuses them with reason
``epoch`` until an operator adopts the new epoch (``lockd epoch adopt``), and after a snapshot restore the
operator first rotates the epoch (``lockd epoch rotate``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tooz.coordination

from lockd import epoch
from lockd.cli.main import main as lockd_main
from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url
from lockd.status import EPOCH
from lockd.status.etcd_store import EtcdStatusStore
from lockd.status.sql_store import SqlStatusStore
from tests.etcd_process import EtcdMember


def header(member: EtcdMember) -> dict[str, str]:
    """The response header of a range on ``member``: cluster_id and revision as etcd reports them."""
    request = urllib.request.Request(member.client_url + "/v3/kv/range", data=b'{"key":"AA=="}')
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())["header"]


class Holder:
    """A lockd coordinator on ``member`` that takes the lock and writes the volume's status fenced by it."""

    def __init__(self, member: EtcdMember, name: str) -> None:
        self.url = f"lockd+etcd3+http://{member.endpoint}?lease_ttl=3&timeout=2"
        self.coord = tooz.coordination.get_coordinator(self.url, b"epoch-test")
        self.coord.start()
        self.lock = self.coord.get_lock(name.encode())
        assert self.lock.acquire(blocking=5)
        self.token, self.epoch = self.lock.token, self.lock.epoch

    def write(self, store: object, volume: str, status: str) -> object:
        current = store.get_record("volume", volume)  # type: ignore[attr-defined]
        expected = [current[0] if current else None]
        return store.compare_and_set("volume", volume, expected, status, fence=self.lock)  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self.coord.is_started:
            self.lock.release()
            self.coord.stop()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    """Holders a test made; whatever it did not stop (a failed assertion) is stopped after."""
    made: list[Holder] = []
    yield made
    for holder in made:
        holder.stop()


def bump_revision(member: EtcdMember, to: int) -> None:
    client = EtcdClient(parse_backend_url(f"lockd+etcd3+http://{member.endpoint}"))
    while client.txn([], [{"request_put": {"key": "L2J1bXA=", "value": ""}}]).revision < to:
        pass
    client.close()


def test_a_rebuilt_cluster_is_refused_until_its_epoch_is_adopted(
    own_etcd: EtcdMember, database: str, holders: list[Holder]
) -> None:
    def hold() -> Holder:
        holders.append(Holder(own_etcd, volume))
        return holders[-1]

    store = SqlStatusStore(database)
    volume = f"vol-{id(store):x}"
    old = hold()
    assert old.write(store, volume, "creating").ok
    old_token, old_epoch, old_cluster = old.token, old.epoch, header(own_etcd)["cluster_id"]
    old.stop()

    # Rebuilt from scratch with the same configuration: same cluster_id, revisions from 1 again.
    own_etcd.stop()
    shutil.rmtree(own_etcd.data_dir)
    own_etcd.start()
    assert header(own_etcd)["cluster_id"] == old_cluster  # why lockd keeps an epoch of its own

    bump_revision(own_etcd, old_token + 10)  # the new cluster's tokens are now *above* the old high-water mark
    new = hold()
    assert new.lock.token > old_token and new.lock.epoch != old_epoch
    refused = new.write(store, volume, "available")
    assert (refused.ok, refused.reason, refused.current) == (False, EPOCH, "creating")  # never compared

    assert store.adopt_epoch(new.lock.epoch, "volume", volume, who="test operator") == 1
    assert new.write(store, volume, "available").ok
    # A holder from the old lifetime is refused from now on, whatever its token.
    ghost = types.SimpleNamespace(token=10**9, epoch=old_epoch, key=None, is_still_owner=lambda: True)
    assert store.compare_and_set("volume", volume, ["available"], "deleting", fence=ghost).reason == EPOCH
    assert store.get_record("volume", volume)[0] == "available"
    new.stop()
    store.close()


def test_a_restored_snapshot_needs_a_rotated_epoch(
    own_etcd: EtcdMember, database: str, tmp_path: Path, holders: list[Holder]
) -> None:
    def hold() -> Holder:
        holders.append(Holder(own_etcd, volume))
        return holders[-1]

    if shutil.which("etcdctl") is None:
        pytest.fail("etcdctl is missing (Debian's etcd-client; scripts/install-system-deps.sh installs it)")
    sql = SqlStatusStore(database)
    volume = f"vol-{id(sql):x}"
    first = hold()
    assert first.write(sql, volume, "creating").ok
    assert first.write(EtcdStatusStore(first.coord.etcd), volume, "creating").ok  # a record in the snapshot too
    first.stop()
    snapshot = tmp_path / "snap.db"
    subprocess.run(
        ["etcdctl", "--endpoints", own_etcd.client_url, "snapshot", "save", str(snapshot)],
        check=True,
        capture_output=True,
    )
    later = hold()  # after the snapshot: this token is issued again after the restore
    assert later.write(sql, volume, "available").ok
    high = later.lock.token
    later.stop()
    assert int(header(own_etcd)["revision"]) > high

    own_etcd.stop()
    shutil.rmtree(own_etcd.data_dir)
    subprocess.run(
        [
            "etcdctl",
            "snapshot",
            "restore",
            str(snapshot),
            "--data-dir",
            str(own_etcd.data_dir),
            "--name",
            own_etcd.name,
            "--initial-cluster",
            own_etcd.initial_cluster,
            "--initial-cluster-token",
            own_etcd.cluster_token,
            "--initial-advertise-peer-urls",
            own_etcd.peer_url,
        ],
        check=True,
        capture_output=True,
    )
    own_etcd.start()
    assert int(header(own_etcd)["revision"]) < high  # revisions went back

    # Without the operator, the restored cluster keeps the snapshot's epoch and issues the same revisions again:
    # the same steps as before the restore get the very token the store last saw, and the store cannot tell the
    # two holders apart. Harmless only because the old cluster is gone; hence `lockd epoch rotate` after a restore.
    replay = hold()
    assert replay.lock.token == high and replay.lock.epoch == later.epoch
    assert replay.write(sql, volume, "deleting").ok
    replay.stop()

    url = replay.url
    assert lockd_main(["epoch", "rotate", "--backend-url", url, "--reason", "restored snapshot"]) == 0
    fresh = hold()
    etcd_store = EtcdStatusStore(EtcdClient(parse_backend_url(url)), owns_client=True)
    assert fresh.write(sql, volume, "deleting").reason == EPOCH
    assert fresh.write(etcd_store, volume, "deleting").reason == EPOCH  # the etcd store's restored records too
    for status_url in (database, None):
        args = ["epoch", "adopt", "--backend-url", url] + (["--status-url", status_url] if status_url else [])
        assert lockd_main(args) == 0
    assert fresh.write(sql, volume, "deleting").ok
    assert fresh.write(etcd_store, volume, "deleting").ok
    client = EtcdClient(parse_backend_url(url))
    assert [r["reason"] for r in epoch.history(client)][-1] == "restored snapshot"
    client.close()
    fresh.stop()
    etcd_store.close()
    sql.close()
