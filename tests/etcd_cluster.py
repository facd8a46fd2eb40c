"""A three-member etcd cluster on loopback for fault tests: kill -9, SIGSTOP/SIGCONT, restart, find the leader.

Built from tests.etcd_process.EtcdMember (one process each, free ports, its own data dir). Members share one
``--initial-cluster`` and cluster token; a killed member restarts on its data dir and rejoins. ``heal()`` puts
the cluster back to three healthy members with one agreed leader, so tests can share one cluster and each
start from the same state.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tests.etcd_process import EtcdMember


class EtcdCluster:
    """Three etcd members on loopback ports; every fault is addressed to one member."""

    def __init__(self, base_dir: Path, size: int = 3, placements: Sequence[tuple[str, Sequence[str]]] = ()) -> None:
        """``placements``: for each member, its host's address and the argv prefix that runs a command on that
        host (tests/netns.py); by default every member runs on loopback with free ports."""
        if placements:
            self.members = [
                EtcdMember(f"m{i}", base_dir / f"m{i}" / "data", 2379, 2380, ip, launcher)
                for i, (ip, launcher) in enumerate(placements)
            ]
        else:
            self.members = [EtcdMember(f"m{i}", base_dir / f"m{i}" / "data") for i in range(size)]
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
        for m in self.members:
            m.wait_ready(timeout)
        self.wait_for_leader(timeout, require_all=True)

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
