"""Statuses kept on another etcd cluster than the locks (status_url = lockd+etcd3://B, locks on A).

The etcd store compares a lock key inside its own txn only for locks of its own cluster (same epoch,
lockd.epoch); a lock of another cluster is asked ``is_still_owner()`` instead, as the SQL store does. Before
epochs, the store looked for the lock key on the status cluster, where it never is: every fenced write was
refused as NOT_OWNER.
"""

from __future__ import annotations

import tooz.coordination

from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url
from lockd.status import NOT_OWNER
from lockd.status.etcd_store import EtcdStatusStore
from tests.etcd_process import EtcdMember


def test_fenced_writes_with_a_lock_of_another_cluster(etcd_url: str, own_etcd: EtcdMember) -> None:
    coord = tooz.coordination.get_coordinator(etcd_url, b"other-cluster")
    coord.start()
    store = EtcdStatusStore(EtcdClient(parse_backend_url(f"lockd+etcd3+http://{own_etcd.endpoint}")), True)
    try:
        lock = coord.get_lock(b"vol-on-a")
        assert lock.acquire(blocking=5)
        assert store.compare_and_set("volume", "v1", [None], "creating", fence=lock).ok
        assert store.compare_and_set("volume", "v1", ["creating"], "available", fence=lock).ok
        assert store.history("volume", "v1")[0]["token"] == lock.token
        lock.release()
        refused = store.compare_and_set("volume", "v1", ["available"], "deleting", fence=lock)
        assert (refused.ok, refused.reason) == (False, NOT_OWNER)
    finally:
        store.close()
        coord.stop()
