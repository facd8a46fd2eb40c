"""Start tests/worker.py children and read their JSON events with deadlines."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from typing import Any


class Worker:
    """A lock client in a child process (see tests/worker.py)."""

    def __init__(self, url: str, name: str, mode: str = "hold", **opts: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.worker", url, name, mode, json.dumps(opts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def event(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next JSON line the worker prints; fails the test if none comes within ``timeout``."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"worker {self.proc.pid} printed nothing within {timeout}s"
        line = self.proc.stdout.readline()
        assert line, f"worker {self.proc.pid} exited with {self.proc.poll()}"
        return json.loads(line)

    def finish(self) -> dict[str, Any]:
        """Close stdin (the worker releases and stops) and return its last event."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        event = self.event()
        self.proc.wait(30)
        return event

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
