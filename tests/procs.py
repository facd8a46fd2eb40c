"""Lock clients in child processes (tests/worker.py) that a fault test can pause, resume, kill and listen to."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.etcd_process import free_port

REPO = Path(__file__).resolve().parents[1]


class ChildProcess:
    """A Python child of the tests (run from the repo root) whose JSON stdout lines arrive as events on a queue."""

    def __init__(self, *args: str, launcher: Sequence[str] = (), tree: Path = REPO) -> None:
        """``launcher``: an argv prefix that runs the child elsewhere, e.g. on a test host (tests/netns.py).
        ``tree``: the source tree it runs from (another version of lockd: tests/integration/test_mixed_versions)."""
        env = dict(os.environ, PYTHONPATH=str(tree))
        self.proc = subprocess.Popen(
            [*launcher, sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tree,
            env=env,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.stderr.append(line.decode(errors="replace"))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace"))

    def wait_event(self, *names: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next event whose name is in ``names`` (others are skipped); fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"worker {self.proc.pid}: no {names} event in {timeout}s; stderr tail:\n"
                    + "".join(self.stderr[-20:])
                )
            try:
                event = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    time.sleep(0.1)  # let the reader thread drain what the process wrote before exiting
                    if self.events.empty():
                        raise AssertionError(
                            f"worker {self.proc.pid} exited ({self.proc.returncode}) before {names}; stderr tail:\n"
                            + "".join(self.stderr[-20:])
                        ) from None
                continue
            if event.get("event") in names:
                return event

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        """Close stdin: a ``hold``/``sync`` worker then checks its lock, releases it and exits."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Kill (if still running) and reap; safe to call twice."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class WorkerProcess(ChildProcess):
    """One ``python -m tests.worker URL NAME MODE OPTS`` (see tests/worker.py)."""

    def __init__(self, url: str, name: str, mode: str, *, tree: Path = REPO, **opts: Any) -> None:
        super().__init__("-m", "tests.worker", url, name, mode, json.dumps(opts), tree=tree)


def wait_for(probe: Callable[[], Any], timeout: float = 15.0, what: str = "condition", interval: float = 0.02) -> Any:
    """Poll ``probe`` until it returns something truthy and return that; fail the test after ``timeout`` seconds.

    A deadline for a condition, not a speed check: timeouts are generous correctness bounds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def lockd_serve(state: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """A real `lockd serve` subprocess (log in ``state/serve.log``); yields its base URL once /readyz is 200.

    SIGTERM on exit, as systemd and Pacemaker stop it.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = state / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lockd.cli.main", "serve", "--port", str(port), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            return httpx.get(url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 60, "lockd serve /readyz")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
