"""The bench's private etcd: `lockd serve`'s embedded etcd, in a temporary state dir removed afterwards.

The bench must not need an etcd of the operator's: without ``--backend-url`` it runs this one on free loopback
ports and removes it all when the run ends.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from lockd.embedded import EmbeddedEtcd, find_etcd


class LocalEtcd(EmbeddedEtcd):
    """An EmbeddedEtcd in a temp dir; ``endpoint`` is ``127.0.0.1:PORT``. Use as a context manager."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="lockd-bench-etcd-")
        super().__init__(Path(self._dir.name), binary=find_etcd())

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> str:
        # The embedded etcd says at WARNING that it started, for operators; in a bench table it is noise.
        logging.getLogger("lockd.embedded").setLevel(logging.ERROR)
        return super().start()

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        self._dir.cleanup()
