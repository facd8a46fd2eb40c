"""A real uvicorn serving ``create_app(settings)`` in a thread on a free loopback port, for API and CLI tests."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import uvicorn

from lockd.api import create_app
from lockd.config import Settings
from tests.etcd_process import free_port
from tests.procs import wait_for


class ApiServer:
    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()

        def started() -> bool:
            assert self.thread.is_alive(), "uvicorn exited during startup"
            return self.server.started

        wait_for(started, 20, "uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)


def metric(http: httpx.Client, name: str) -> float:
    """The value of one Prometheus sample (no labels) from ``/metrics``."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")
