"""A Cinder volume driver for the active/active demo: sparse files on storage both services share.

It keeps what a real array driver keeps and guards it the way real drivers do:

- each volume is a sparse file ``<shared_dir>/volume-<id>``, each snapshot ``snapshot-<id>``; per-volume
  operations hold ``coordination.synchronized('{volume.id}-demo')`` (Cinder's tooz lock: lockd when
  ``[coordination] backend_url`` is a lockd URL, a host-local file lock with the default ``file://``);
- a backend-wide allocation ledger ``<shared_dir>/ledger.json`` ({id: size in GiB}) is read, changed and written
  back under ``utils.synchronized('demo-ledger', external=True)``: an oslo external lock, a file in this
  host's ``lock_path``, unless ``LOCKD_PATCH_LOCKUTILS=1`` makes it a lockd lock;
- ``demo_array_delay`` seconds of sleep inside each critical section stand for the array call.

Every operation appends one JSON line to ``<shared_dir>/operations.jsonl`` when it starts and one when it ends
(host, pid, op, resource id, time), so a checker can count work done twice or at the same time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from cinder import coordination, utils
from cinder.volume import configuration, driver
from oslo_config import cfg

demo_opts = [
    cfg.StrOpt("demo_shared_dir", help="Directory both volume services share (the 'array')."),
    cfg.FloatOpt("demo_array_delay", default=0.05, help="Seconds each array call takes, inside its lock."),
    cfg.IntOpt("demo_capacity_gb", default=10000, help="Capacity reported to the scheduler."),
]
cfg.CONF.register_opts(demo_opts, group=configuration.SHARED_CONF_GROUP)

GIB = 1024**3


class SharedFileDriver(driver.VolumeDriver):
    """Volumes as sparse files in one shared directory; safe active/active only with distributed locks."""

    VERSION = "1.0.0"
    SUPPORTS_ACTIVE_ACTIVE = True
    CI_WIKI_NAME = "lockd_demo"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(demo_opts)
        self.shared_dir = self.configuration.demo_shared_dir
        self.delay = self.configuration.demo_array_delay
        self.host_name = f"{socket.gethostname()}/{self.host}"

    @staticmethod
    def get_driver_options() -> list[cfg.Opt]:
        return demo_opts

    # -- setup and stats ---------------------------------------------------------------------------------------

    def do_setup(self, context: Any) -> None:
        os.makedirs(self.shared_dir, exist_ok=True)

    def check_for_setup_error(self) -> None:
        if not os.path.isdir(self.shared_dir):
            raise RuntimeError(f"demo_shared_dir {self.shared_dir} is not a directory")

    def _update_volume_stats(self) -> None:
        capacity = self.configuration.demo_capacity_gb
        self._stats = {
            "volume_backend_name": self.configuration.safe_get("volume_backend_name") or "demo",
            "vendor_name": "lockd demo",
            "driver_version": self.VERSION,
            "storage_protocol": "file",
            "total_capacity_gb": capacity,
            "free_capacity_gb": capacity,
            "reserved_percentage": 0,
            "QoS_support": False,
            "thin_provisioning_support": True,
            "max_over_subscription_ratio": 100.0,
        }

    # -- the shared state ------------------------------------------------------------------------------------------

    def _path(self, kind: str, rid: str) -> str:
        return os.path.join(self.shared_dir, f"{kind}-{rid}")

    @contextlib.contextmanager
    def _operation(self, op: str, rid: str) -> Iterator[None]:
        """Log the operation's start, make the array call, run the block, log its end (not if it raised)."""
        self._record(op, rid, "start")
        self._array_call()
        yield
        self._record(op, rid, "end")

    def _record(self, op: str, rid: str, phase: str) -> None:
        line = {"op": op, "id": rid, "phase": phase, "host": self.host_name, "pid": os.getpid(), "at": time.time()}
        with open(os.path.join(self.shared_dir, "operations.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")  # one short O_APPEND write: lines never interleave

    def _array_call(self) -> None:
        time.sleep(self.delay)

    @utils.synchronized("demo-ledger", external=True)
    def _ledger_set(self, rid: str, size: int | None) -> None:
        """Read, change and write back the allocation ledger (the read-modify-write real drivers do)."""
        path = os.path.join(self.shared_dir, "ledger.json")
        try:
            with open(path) as f:
                ledger = json.load(f)
        except FileNotFoundError:
            ledger = {}
        self._array_call()
        if size is None:
            ledger.pop(rid, None)
        else:
            ledger[rid] = size
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(ledger, f)
        os.replace(tmp, path)

    def _allocate(self, kind: str, rid: str, size_gb: int, source: str | None = None) -> None:
        path = self._path(kind, rid)
        with open(path, "wb") as f:
            if source is not None and os.path.exists(source):
                f.write(open(source, "rb").read(4096))  # a snapshot starts from its volume's first block
            f.truncate(size_gb * GIB)
        self._ledger_set(rid, size_gb)

    def _free(self, kind: str, rid: str) -> None:
        try:
            os.remove(self._path(kind, rid))
        except FileNotFoundError:
            pass
        self._ledger_set(rid, None)

    # -- volume operations -------------------------------------------------------------------------------------

    @coordination.synchronized("{volume.id}-demo")
    def create_volume(self, volume: Any) -> None:
        with self._operation("create_volume", volume.id):
            self._allocate("volume", volume.id, volume.size)

    @coordination.synchronized("{volume.id}-demo")
    def delete_volume(self, volume: Any) -> None:
        with self._operation("delete_volume", volume.id):
            self._free("volume", volume.id)

    @coordination.synchronized("{volume.id}-demo")
    def extend_volume(self, volume: Any, new_size: int) -> None:
        with self._operation("extend_volume", volume.id):
            with open(self._path("volume", volume.id), "r+b") as f:
                f.truncate(new_size * GIB)
            self._ledger_set(volume.id, new_size)

    @coordination.synchronized("{snapshot.volume_id}-demo")
    def create_snapshot(self, snapshot: Any) -> None:
        with self._operation("create_snapshot", snapshot.id):
            self._allocate("snapshot", snapshot.id, snapshot.volume_size, self._path("volume", snapshot.volume_id))

    @coordination.synchronized("{snapshot.volume_id}-demo")
    def delete_snapshot(self, snapshot: Any) -> None:
        with self._operation("delete_snapshot", snapshot.id):
            self._free("snapshot", snapshot.id)

    # -- exports: nothing is attached in the demo ------------------------------------------------------------------

    def ensure_export(self, context: Any, volume: Any) -> None:
        pass

    def create_export(self, context: Any, volume: Any, connector: Any) -> None:
        pass

    def remove_export(self, context: Any, volume: Any) -> None:
        pass

    def initialize_connection(self, volume: Any, connector: Any) -> dict[str, Any]:
        return {"driver_volume_type": "local", "data": {"device_path": self._path("volume", volume.id)}}

    def terminate_connection(self, volume: Any, connector: Any, **kwargs: Any) -> None:
        pass
