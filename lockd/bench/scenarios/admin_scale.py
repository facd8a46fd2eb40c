"""The admin view at scale: ``lockd serve`` over 100,000 held locks (issue 14).

The locks are written straight into etcd, as ten lockd processes holding 10,000 locks each would have left
them: ten leases (a session each), a member record per lease and the lock keys ``/tooz/locks<name>`` with
lockd's holder JSON, 128 puts per txn (etcd's default ``--max-txn-ops``). Real acquisitions would cost two
round trips each and measure the lock path, not the view; the view reads keys, so keys are what it needs.

Then ``lockd serve`` starts as a subprocess on that etcd and is measured: the time from exec until
``/readyz`` answers 200 *and* the view holds every lock (its ``lockd_locks_held`` gauge), its RSS after
start-up and at its peak while serving listings (sampled every 20 ms), the p50 of ``GET /v1/locks?prefix=P`` (P
matching ten names) and of ``GET /v1/locks`` (every lock), the full listing's size, and idle CPU (its CPU
time over a quiet interval, as a share of one core). The leases are revoked at the end, which deletes every key.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from lockd.bench.result import ScenarioResult
from lockd.bench.stats import percentile
from lockd.etcd import keys
from lockd.etcd.client import EtcdClient, op_put
from lockd.options import parse_backend_url

SESSIONS = 10
_TXN_OPS = 128  # etcd's default --max-txn-ops
_LEASE_TTL = 3600  # long enough that nothing expires during the run, nothing keeps them alive
_PREFIX_REQUESTS = 50
_FULL_REQUESTS = 7
_PAGE = 1000  # locks per page in the paged listing (``?limit=&after=``), from the middle of the names
_IDLE_SECONDS = 10.0

#: Issue 14's floors for the admin view.
FLOOR_LIST_P50_S = 1.0
FLOOR_RSS_MB = 300.0


def lock_name(index: int) -> str:
    return f"admin-scale-{index:07d}"


def hold_locks(client: EtcdClient, count: int) -> list[int]:
    """Write ``count`` held locks over SESSIONS leases; returns the lease ids (revoke them to clean up)."""
    host = socket.gethostname()
    leases = [client.lease_grant(_LEASE_TTL)[0] for _ in range(SESSIONS)]
    for s, lease in enumerate(leases):
        member = f"bench-admin-{s}"
        record = {"member": member, "host": host, "pid": 100000 + s, "started_at": time.time()}
        client.txn([], [op_put(keys.member_key(member), json.dumps(record).encode(), lease)])
    batch: list[dict[str, Any]] = []
    for i in range(count):
        s = i % SESSIONS
        holder = {
            "member": f"bench-admin-{s}",
            "host": host,
            "pid": 100000 + s,
            "acquired_at": time.time(),
            "waiter": f"{leases[s]:x}-{i:x}",
        }
        value = json.dumps(holder, separators=(",", ":")).encode()
        batch.append(op_put(keys.lock_key(lock_name(i)), value, leases[s]))
        if len(batch) == _TXN_OPS or i == count - 1:
            client.txn([], batch)
            batch = []
    return leases


class _Api:
    """Keep-alive GETs to one ``lockd serve``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        try:
            self.conn.request("GET", path)
            answer = self.conn.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            raise
        return answer.status, body, time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(api: _Api, count: int, deadline: float) -> float | None:
    """Seconds until /readyz is 200 and the view holds every lock (the ``lockd_locks_held`` gauge, which
    costs nothing to ask, unlike a listing); None past ``deadline``."""
    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            if api.get("/readyz")[0] == 200:
                status, body, _ = api.get("/metrics")
                if status == 200 and _gauge(body, b"lockd_locks_held") >= count:
                    return time.monotonic() - started
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.05)
    return None


def _gauge(metrics: bytes, name: bytes) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + b" "):
            return float(line.split()[1])
    return -1.0


class _PeakRss:
    """The highest RSS of a process, sampled every 20 ms from a thread while a block runs."""

    def __init__(self, proc: Any) -> None:
        self._proc = proc
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 1e6)
            self._stop.wait(0.02)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(endpoint: str, count: int, say: Callable[[str], None] = lambda message: None) -> ScenarioResult:
    """Raises RuntimeError when ``lockd serve`` does not come up or list the locks."""
    import psutil

    result = ScenarioResult(
        "admin-scale",
        f"lockd serve over {count:,} held locks ({SESSIONS} sessions)",
        params={"locks": count, "sessions": SESSIONS},
    )
    client = EtcdClient(parse_backend_url(f"lockd+etcd3+http://{endpoint}?timeout=60"))
    say(f"admin-scale: writing {count:,} held locks ...")
    started = time.monotonic()
    leases = hold_locks(client, count)
    result.params["write_s"] = round(time.monotonic() - started, 1)
    port = _free_port()
    metrics: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lockd-bench-serve-") as state:
        command = [
            sys.executable, "-m", "lockd.cli.main", "serve", "--backend-url", f"lockd+etcd3+http://{endpoint}",
            "--port", str(port), "--log-level", "warning", "--state-dir", state,
        ]  # fmt: skip
        say("admin-scale: starting lockd serve ...")
        exec_at = time.monotonic()
        serve = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc = psutil.Process(serve.pid)
            api = _Api(port)
            waited = _wait_ready(api, count, time.monotonic() + 300)
            if waited is None:
                raise RuntimeError(f"admin-scale: lockd serve did not hold {count:,} locks in its view within 300 s")
            metrics["startup_s"] = time.monotonic() - exec_at
            metrics["rss_ready_mb"] = proc.memory_info().rss / 1e6
            say("admin-scale: measuring listings ...")
            with _PeakRss(proc) as peak:
                prefix_ms, prefix_n = _timed(api, f"/v1/locks?prefix={lock_name(count // 2)[:-1]}", _PREFIX_REQUESTS)
                middle = lock_name(count // 2)
                page_ms, page_n = _timed(api, f"/v1/locks?limit={_PAGE}&after={middle}", _PREFIX_REQUESTS)
                full_ms, full_n, size = [], 0, 0
                for _ in range(_FULL_REQUESTS):
                    status, body, seconds = api.get("/v1/locks")
                    if status != 200:
                        raise RuntimeError(f"admin-scale: GET /v1/locks answered {status}")
                    full_ms.append(seconds * 1000)
                    full_n, size = body.count(b'"name"'), len(body)
            metrics.update(
                {
                    "prefix_p50_ms": percentile(prefix_ms, 50),
                    "prefix_listed": prefix_n,
                    "page_p50_ms": percentile(page_ms, 50),
                    "page_listed": page_n,
                    "list_p50_ms": percentile(full_ms, 50),
                    "list_max_ms": max(full_ms),
                    "list_listed": full_n,
                    "list_mb": size / 1e6,
                    "rss_peak_mb": peak.peak_mb,
                }
            )
            say(f"admin-scale: idle CPU over {_IDLE_SECONDS:g} s ...")
            time.sleep(1.0)  # let the last answer's garbage go
            before = proc.cpu_times()
            time.sleep(_IDLE_SECONDS)
            after = proc.cpu_times()
            busy = (after.user + after.system) - (before.user + before.system)
            metrics["idle_cpu_pct"] = 100.0 * busy / _IDLE_SECONDS
            metrics["rss_idle_mb"] = proc.memory_info().rss / 1e6
        finally:
            serve.terminate()
            try:
                serve.wait(15)
            except subprocess.TimeoutExpired:
                serve.kill()
            for lease in leases:
                client.lease_revoke(lease)
            client.close()
    result.metrics["lockd"] = metrics
    result.notes.append(
        f"start-up = exec until /readyz is 200 and the view holds all {count:,}; prefix = names sharing all "
        f"but the last digit (10); page = ?limit={_PAGE}&after= a name in the middle; p50 over {_PREFIX_REQUESTS} "
        f"(prefix, page) and {_FULL_REQUESTS} (list) requests"
    )
    return result


def _timed(api: _Api, path: str, times: int) -> tuple[list[float], int]:
    out, listed = [], 0
    for _ in range(times):
        status, body, seconds = api.get(path)
        if status != 200:
            raise RuntimeError(f"admin-scale: GET {path} answered {status}")
        out.append(seconds * 1000)
        listed = len(json.loads(body)["locks"])
    return out, listed
