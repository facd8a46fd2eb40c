"""The bench's private etcd: `lockd serve`'s embedded etcd, in a temporary state dir removed afterwards.

The bench must not need an etcd of the operator's: without ``--backend-url`` it runs this one on free loopback
ports and removes it all when the run ends.
"""

from __future__ import annotations

import logging
import os
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

    @property
    def pid(self) -> int | None:
        """The etcd process's id while it runs (for its CPU time, ``cpu_seconds``)."""
        return self.proc.pid if self.proc is not None else None

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        self._dir.cleanup()


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds the process ``pid`` has used so far (``/proc/<pid>/stat``), None if unknown.

    The bench reads it only for the etcd it started itself: an etcd given by ``--backend-url`` may be remote or
    shared, and a pid found by its name could be somebody else's, so its CPU is reported as unknown.
    """
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may itself hold spaces or parentheses;
    # utime and stime are fields 14 and 15 of the whole line (proc(5)), in clock ticks.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
