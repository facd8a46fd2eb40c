"""What a member that cannot serve now answers, on etcd 3.4 and 3.5, and that lockd's client fails over on each.

lockd.etcd.answers sorts the gateway's answers; these tests make each member state for real and send what lockd
sends (txn, range, lease grant and keepalive from sixteen threads over the client's pooled connections):

* stopping: SIGTERM (as systemd stops etcd) while the threads run. etcd 3.4 answers ``408 code 1 "grpc: the
  client connection is closing"`` to some of them: before lockd.etcd.answers that was raised as a refusal
  (EtcdRequestError) out of the lock calls instead of failing over (issue 24);
* starting: a client whose first member is starting on its data directory;
* learner: a client whose first member is a learner (``503 code 14 "rpc not supported for learner"``).

The leaderless member needs a partition, so it is in tests/netfaults/test_member_answers.py. Every test asserts
that no call raised, that the client ended on a member that serves, and that the member state really happened
(the raw answers, seen on a side connection, include the ones the module doc lists).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockd.etcd.client import EtcdClient, op_put
from lockd.etcd.wire import b64
from lockd.options import parse_backend_url
from tests.etcd_cluster import EtcdCluster
from tests.etcd_process import EtcdMember, etcd_35_binary, etcd_binary
from tests.procs import wait_for

pytestmark = pytest.mark.faults

THREADS = 16
VERSIONS = {"3.4": etcd_binary, "3.5": etcd_35_binary}


@pytest.fixture(scope="module", params=sorted(VERSIONS))
def versioned_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp(f"answers-{request.param}"))
    for member in cluster.members:
        member.binary = VERSIONS[request.param]()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(versioned_cluster: EtcdCluster) -> Iterator[EtcdCluster]:
    versioned_cluster.heal()
    yield versioned_cluster
    versioned_cluster.heal()


class Load:
    """Sixteen threads looping txn / range / keepalive through one client, each on a lease of its own; every
    exception out of a call is kept."""

    def __init__(self, client: EtcdClient) -> None:
        self.client = client
        self.errors: list[str] = []
        self.calls = 0
        self._stop = threading.Event()
        self._count = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(THREADS)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        wait_for(lambda: self.calls >= THREADS * 5 or bool(self.errors), 30, "the load to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, i: int) -> None:
        key = f"/answers/{i}".encode()
        lease = 0
        while not self._stop.is_set():
            try:
                if not lease:
                    lease, _ = self.client.lease_grant(5)
                self.client.txn([], [op_put(key, str(self.calls).encode(), lease)])
                self.client.range(key)
                if self.client.lease_keepalive(lease) <= 0:
                    lease = 0
                with self._count:
                    self.calls += 1
            except Exception as exc:  # noqa: BLE001 - every kind counts: the floor is no exception at all
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)

    def calls_after(self, seconds: float) -> int:
        before = self.calls
        time.sleep(seconds)
        return self.calls - before

    def goes_on(self, within: float = 15.0) -> bool:
        """Whether calls complete again within ``within`` seconds (a request etcd dropped waits out its timeout)."""
        before = self.calls
        wait_for(lambda: self.calls > before + THREADS, within, "calls to complete again")
        return True


class RawProbe:
    """A side load on plain kept-alive connections to one member, recording every non-200 answer's body: the
    evidence that the member state under test really happened."""

    def __init__(self, member: EtcdMember, threads: int = 4) -> None:
        self.member = member
        self.answers: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> RawProbe:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self) -> None:
        body = json.dumps({"compare": [], "success": [{"request_range": {"key": b64(b"/answers/0")}}]}).encode()
        host, port = self.member.endpoint.split(":")
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            try:
                conn = conn or http.client.HTTPConnection(host, int(port), timeout=5)
                conn.request("POST", "/v3/kv/txn", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    answer = json.loads(data)
                    self.answers[f"{response.status} {answer.get('code')} {answer.get('message')}"] += 1
            except (OSError, http.client.HTTPException, ValueError):
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)


def client_on(cluster: EtcdCluster, first: EtcdMember) -> EtcdClient:
    return EtcdClient(parse_backend_url(cluster.url(first, timeout=2)))


def test_stopping_member(cluster: EtcdCluster) -> None:
    first = cluster.members[0]
    client = client_on(cluster, first)
    try:
        with Load(client) as load, RawProbe(first) as probe:
            time.sleep(0.5)
            first.stop()  # SIGTERM: etcd stops serving gracefully, cancelling what it has in flight
            assert load.calls_after(1.0) > 0, "the client did not carry on through the other members"
        first.start()
    finally:
        client.close()
    print(f"\nstopping {first.binary}: {load.calls} calls, raw answers {dict(probe.answers)}")
    assert load.errors == []
    assert client.endpoint_name() != f"http://{first.endpoint}"


def test_starting_member(cluster: EtcdCluster) -> None:
    first = cluster.members[0]
    first.stop()
    first.start(wait=False)
    client = client_on(cluster, first)
    try:
        with Load(client) as load:
            first.wait_ready()
            assert load.calls_after(0.5) > 0
    finally:
        client.close()
    assert load.errors == []


def test_learner_member(cluster: EtcdCluster, tmp_path: Path) -> None:
    learner = EtcdMember("learner", tmp_path / "learner" / "data", binary=cluster.members[0].binary)
    learner.cluster_token = cluster.members[0].cluster_token
    learner.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in [*cluster.members, learner])
    learner.joins = True
    member_id = add_learner(cluster, learner)
    try:
        learner.start()
        client = client_on(cluster, learner)
        try:
            with RawProbe(learner) as probe, Load(client) as load:
                assert load.calls_after(0.5) > 0
        finally:
            client.close()
    finally:
        learner.stop()
        remove_member(cluster, member_id)
    assert any("not supported for learner" in answer for answer in probe.answers), probe.answers
    assert load.errors == []


def _gateway(member: EtcdMember, path: str, body: dict[str, object]) -> dict[str, object]:
    host, port = member.endpoint.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"{path}: HTTP {response.status} {answer}")
    return answer


def add_learner(cluster: EtcdCluster, learner: EtcdMember) -> str:
    """``member add --learner``; etcd refuses it for a few seconds after a member (re)joined ("unhealthy cluster")."""
    deadline = time.monotonic() + 30
    while True:
        try:
            answer = _gateway(
                cluster.wait_for_leader(),
                "/v3/cluster/member/add",
                {"peerURLs": [learner.peer_url], "isLearner": True},
            )
            return str(answer["member"]["ID"])  # type: ignore[index]
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def remove_member(cluster: EtcdCluster, member_id: str) -> None:
    _gateway(cluster.wait_for_leader(), "/v3/cluster/member/remove", {"ID": member_id})


@pytest.mark.parametrize("how", ["sigterm", "kill"])
def test_leader_change_on_one_endpoint(cluster: EtcdCluster, how: str) -> None:
    """A client that knows one member (a follower), while the leader goes: the follower answers "leader changed"
    until the new leader is known, and there is no other member to ask. That answer says "not now", so the client
    asks again until a request timeout has passed (lockd.etcd.client), rather than raising it at once (as it did).

    What etcd does not answer stays a timeout: a proposal the follower forwarded to the leader just as it stopped
    or handed over is dropped without a word, and the follower waits out its own request timeout (5 s + two
    election timeouts), longer than this client's 5 s. A client that lists more members fails over then."""
    leader = cluster.wait_for_leader()
    follower = next(m for m in cluster.members if m is not leader)
    client = EtcdClient(parse_backend_url(f"lockd+etcd3+http://{follower.endpoint}?timeout=5"))
    try:
        with Load(client) as load, RawProbe(follower) as probe:
            time.sleep(0.3)
            leader.stop() if how == "sigterm" else leader.kill()
            cluster.wait_for_leader()
            assert load.goes_on()
    finally:
        client.close()
    timeouts = [e for e in load.errors if e.startswith("BackendTimeout")]
    print(
        f"\nleader {how} ({follower.binary}): {load.calls} calls, {len(timeouts)} timed out, raw answers "
        f"{dict(probe.answers)}"
    )
    assert [e for e in load.errors if e not in timeouts] == []
