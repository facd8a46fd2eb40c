"""A three-member etcd cluster on loopback for fault tests: kill -9, SIGSTOP/SIGCONT, restart, find the leader.

Built from tests.etcd_process.EtcdMember (one process each, free ports, its own data dir). Members share one
``--initial-cluster`` and cluster token; a killed member restarts on its data dir and rejoins. ``heal()`` puts
the cluster back to three healthy members with one agreed leader, so tests can share one cluster and each
start from the same state.

Planned operator changes (tests/planned.py) use the rest: a graceful restart (SIGTERM, as systemd stops etcd),
``wait_healthy`` between steps, the version endpoints, and ``member add`` / ``member remove`` through the JSON
gateway, as ``etcdctl member`` does over gRPC.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.etcd_process import EtcdMember


class EtcdCluster:
    """Three etcd members on loopback ports; every fault is addressed to one member."""

    def __init__(
        self,
        base_dir: Path,
        size: int = 3,
        placements: Sequence[tuple[str, Sequence[str]]] = (),
        binary: str | None = None,
    ) -> None:
        """``placements``: for each member, its host's address and the argv prefix that runs a command on that
        host (tests/netns.py); by default every member runs on loopback with free ports. ``binary``: the etcd
        every member runs (default: tests.etcd_process.etcd_binary())."""
        if placements:
            self.members = [
                EtcdMember(f"m{i}", base_dir / f"m{i}" / "data", 2379, 2380, ip, launcher, binary)
                for i, (ip, launcher) in enumerate(placements)
            ]
        else:
            self.members = [EtcdMember(f"m{i}", base_dir / f"m{i}" / "data", binary=binary) for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = self.members[0].cluster_token
        for m in self.members:
            m.initial_cluster = initial
            m.cluster_token = token

    # -- life cycle -------------------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        # No member is healthy before a quorum is up, so start them all before waiting on any.
        for m in self.members:
            m.start(wait=False)
        for m in self.members:
            m.wait_ready(timeout)
        self.wait_for_leader(timeout)

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def heal(self, timeout: float = 30.0) -> None:
        """Resume paused members, restart dead ones, and wait until all agree on one leader."""
        for m in self.members:
            if m.running() and m.paused:
                m.resume()
            elif not m.running():
                m.start(wait=False)
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0) -> EtcdMember:
        """Wait until every member answers ``/health`` and all of them name one leader (what an operator checks
        with ``etcdctl endpoint health`` and ``endpoint status`` before the next step); returns the leader."""
        for m in self.members:
            m.wait_ready(timeout)
        return self.wait_for_leader(timeout, require_all=True)

    # -- faults -----------------------------------------------------------------------------------------------

    def kill(self, member: EtcdMember) -> None:
        """kill -9: the process dies at once and its sockets are reset."""
        member.kill()

    def pause(self, member: EtcdMember) -> None:
        """SIGSTOP: connections stay open but nothing answers (a hung member, as a client sees it)."""
        member.pause()

    def resume(self, member: EtcdMember) -> None:
        member.resume()

    def restart(self, member: EtcdMember, wait: bool = True) -> None:
        member.kill()
        member.start(wait=wait)

    def graceful_restart(self, member: EtcdMember, wait: bool = True) -> float:
        """SIGTERM, as ``systemctl restart etcd`` does (a leader hands its leadership over first), then start
        again on the same data directory, with ``member.binary`` (an upgrade changes it in between).
        Returns how long the stop took."""
        began = time.monotonic()
        member.stop()
        stopped = time.monotonic() - began
        member.start(wait=wait)
        return stopped

    # -- membership (the JSON gateway's /v3/cluster/member/*) -------------------------------------------------

    @staticmethod
    def gateway(member: EtcdMember, path: str, body: dict[str, object], timeout: float = 5.0) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` of one member; raises RuntimeError with etcd's answer on a refusal."""
        data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        request = urllib.request.Request(f"{member.client_url}/v3/{path}", data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"/v3/{path} on {member.name}: HTTP {exc.code} {exc.read()[:200]!r}") from exc

    def member_list(self, via: EtcdMember) -> list[dict[str, Any]]:
        """``etcdctl member list``: each member's ``ID`` (a decimal string), ``name``, ``peerURLs``, ``clientURLs``
        (a member added but not started yet has no name and no client URLs)."""
        return list(self.gateway(via, "cluster/member/list", {}).get("members", []))

    def member_id(self, member: EtcdMember, via: EtcdMember) -> str:
        """The cluster's ID of ``member``, found by its peer URL."""
        for entry in self.member_list(via):
            if member.peer_url in entry.get("peerURLs", []):
                return str(entry["ID"])
        raise LookupError(f"{member.name} ({member.peer_url}) is not a member")

    def member_remove(self, member_id: str, via: EtcdMember, timeout: float = 30.0) -> None:
        """``etcdctl member remove``, repeated while etcd refuses it for now (its strict reconfiguration check
        answers "unhealthy cluster" for a few seconds after a member was unreachable)."""
        self._reconfigure(via, "cluster/member/remove", {"ID": member_id}, timeout)

    def member_add(self, peer_url: str, via: EtcdMember, timeout: float = 30.0) -> str:
        """``etcdctl member add`` (a voting member, not started yet); returns its ID. Repeated as member_remove."""
        answer = self._reconfigure(via, "cluster/member/add", {"peerURLs": [peer_url]}, timeout)
        return str(answer["member"]["ID"])

    def _reconfigure(self, via: EtcdMember, path: str, body: dict[str, object], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.gateway(via, path, body)
            except (RuntimeError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    # -- versions -----------------------------------------------------------------------------------------------

    @staticmethod
    def versions(member: EtcdMember, timeout: float = 1.0) -> dict[str, str]:
        """``GET /version``: ``etcdserver`` (this member's binary) and ``etcdcluster`` (the version the cluster
        runs at: raised by the leader only once every member runs the newer binary)."""
        with urllib.request.urlopen(member.client_url + "/version", timeout=timeout) as response:
            return json.loads(response.read())

    # -- who is who -------------------------------------------------------------------------------------------

    @staticmethod
    def status(member: EtcdMember, timeout: float = 1.0) -> dict[str, object]:
        """``/v3/maintenance/status`` of one member (raises OSError if it does not answer)."""
        request = urllib.request.Request(
            member.client_url + "/v3/maintenance/status", data=b"{}", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def live(self) -> list[EtcdMember]:
        return [m for m in self.members if m.running() and not m.paused]

    def leader(self) -> EtcdMember | None:
        """The member every live member names as leader, or None (election running, no quorum)."""
        ids: dict[str, EtcdMember] = {}
        named: set[str] = set()
        for m in self.live():
            try:
                answer = self.status(m)
            except OSError:
                return None
            ids[str(answer.get("header", {}).get("member_id"))] = m  # type: ignore[union-attr]
            named.add(str(answer.get("leader")))
        if len(named) != 1:
            return None
        return ids.get(named.pop())

    def wait_for_leader(self, timeout: float = 30.0, require_all: bool = False) -> EtcdMember:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and (not require_all or len(self.live()) == len(self.members)):
                return leader
            time.sleep(0.05)
        raise RuntimeError(f"etcd cluster has no agreed leader after {timeout}s")

    def followers(self) -> list[EtcdMember]:
        leader = self.wait_for_leader()
        return [m for m in self.members if m is not leader]

    def url(self, first: EtcdMember, scheme: str = "lockd+etcd3+http", **options: object) -> str:
        """A backend URL that talks to ``first`` and fails over to the other members (lockd only)."""
        others = ",".join(m.endpoint for m in self.members if m is not first)
        query = "&".join(f"{k}={v}" for k, v in {"endpoints": others, **options}.items())
        return f"{scheme}://{first.endpoint}?{query}"
