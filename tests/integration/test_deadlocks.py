"""Deadlocks across processes, from the wait-for graph of `lockd serve` (lockd.api.waits), on a real etcd.

- Two processes take two locks in opposite orders (A then B, B then A): `/v1/deadlocks` reports one cycle with
  both owners and both locks, under one id, and suggests the youngest hold; `lockd break` of it ends the cycle,
  both processes finish, and the cycle moves to ``resolved``.
- A three-party cycle (A->B, B->C, C->A) is one deadlock of three; a waiter whose timed wait runs out opens it,
  and it leaves the list.
- No false positive: a process holds A in one thread while another of its threads waits for B, held by a
  second process that waits for A. As processes, that is a cycle (each waits for the other); as threads, the
  one holding A waits for nothing, so nobody is stuck for good. `/v1/waits` has both edges; no deadlock.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from lockd.cli.main import main
from lockd.config import Settings
from tests.etcd_process import EtcdMember, queue_entries
from tests.integration.api_server import ApiServer
from tests.procs import ChildProcess, wait_for

TOKEN = "deadlock-token"


@pytest.fixture(scope="module")
def server(etcd: EtcdMember) -> Iterator[ApiServer]:
    settings = Settings(backend_url=f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=5", admin_token=TOKEN)
    with ApiServer(settings) as srv:
        yield srv


def child(url: str, mode: str, first: str, second: str, wait: float | None = None) -> ChildProcess:
    spec: dict[str, Any] = {"mode": mode, "first": first, "second": second}
    if wait is not None:
        spec["wait"] = wait
    return ChildProcess("-m", "tests.deadlock_child", url, json.dumps(spec))


def api(server: ApiServer, path: str) -> dict[str, Any]:
    answer = httpx.get(server.url + path, timeout=5)
    answer.raise_for_status()
    return answer.json()


def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"dl-{tag}-a", f"dl-{tag}-b"


@dataclass(frozen=True)
class Crossed:
    """Two processes that took fresh locks ``a`` and ``b`` in opposite orders: ``one`` holds ``a`` and waits for
    ``b``, ``two`` the reverse. ``tokens``: each lock's token, as its holder said."""

    a: str
    b: str
    one: ChildProcess
    two: ChildProcess
    tokens: dict[str, int]

    @property
    def youngest(self) -> str:
        """The lock of the younger hold (the higher token): the one the sidecar should suggest breaking."""
        return max(self.tokens, key=lambda name: self.tokens[name])

    def finish(self) -> None:
        """Once the cycle is broken: both get their second lock, release both and end."""
        for proc in (self.one, self.two):
            proc.wait_event("got-second", timeout=30)
            proc.wait_event("done", timeout=30)


def cross(url: str, workers: list[ChildProcess]) -> Crossed:
    """Close a two-party cycle: each process takes its first lock, then is sent on to the other's."""
    a, b = names()
    one, two = child(url, "cross", a, b), child(url, "cross", b, a)
    workers += [one, two]
    tokens = {a: one.wait_event("holding")["token"], b: two.wait_event("holding")["token"]}
    one.send("go")
    two.send("go")
    return Crossed(a, b, one, two, tokens)


def ended(server: ApiServer) -> dict[str, Any]:
    """``/v1/deadlocks`` once no deadlock is open and one has ended."""

    def closed() -> dict[str, Any] | None:
        answer = api(server, "/v1/deadlocks")
        return answer if not answer["deadlocks"] and answer["resolved"] else None

    return wait_for(closed, 10, "the deadlock to end")


def test_opposite_orders_are_one_deadlock_until_its_suggested_lock_is_broken(
    server: ApiServer, etcd_url: str, workers: list[ChildProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    crossed = cross(etcd_url, workers)
    a, b = crossed.a, crossed.b
    wait_for(lambda: len(queue_entries(etcd_url, a)) == 1 and len(queue_entries(etcd_url, b)) == 1, 10, "both to wait")
    closed = time.monotonic()
    found = wait_for(lambda: api(server, "/v1/deadlocks")["deadlocks"], 10, "the deadlock to be reported")
    took = time.monotonic() - closed
    print(f"\ndeadlock reported {took:.2f}s after the cycle closed: {found}")
    assert took < 5, "reported far later than the detection interval"
    (deadlock,) = found
    assert sorted(deadlock["locks"]) == sorted([a, b])
    assert {owner["pid"] for owner in deadlock["owners"]} == {crossed.one.proc.pid, crossed.two.proc.pid}
    assert all(owner["thread"] for owner in deadlock["owners"])
    youngest = crossed.youngest
    assert deadlock["suggested_break"] == youngest
    time.sleep(1.0)  # a second look, a detection interval later: the same cycle, the same id, once
    assert [d["id"] for d in api(server, "/v1/deadlocks")["deadlocks"]] == [deadlock["id"]]

    capsys.readouterr()
    assert main(["deadlocks", "--url", server.url]) == 0
    said = capsys.readouterr().out
    assert f"deadlock {deadlock['id']}" in said and f"lockd break {youngest}" in said, said

    assert main(["break", youngest, "--url", server.url, "--admin-token", TOKEN]) == 0
    crossed.finish()
    after = ended(server)
    assert after["resolved"][0]["id"] == deadlock["id"]
    assert after["resolved"][0]["how"] == f"{youngest!r} (token {crossed.tokens[youngest]}) was broken"


def test_threads_of_one_process_are_separate_owners_so_no_false_deadlock(
    server: ApiServer, etcd_url: str, workers: list[ChildProcess]
) -> None:
    a, b = names()
    holder = child(etcd_url, "cross", b, a)  # holds B, then waits for A
    workers.append(holder)
    holder.wait_event("holding")
    split = child(etcd_url, "split", a, b)  # one thread holds A; another waits for B
    workers.append(split)
    split.wait_event("holding")
    holder.send("go")
    wait_for(lambda: len(queue_entries(etcd_url, a)) == 1 and len(queue_entries(etcd_url, b)) == 1, 10, "both to wait")

    def both_edges() -> list[dict[str, Any]] | None:
        edges = api(server, "/v1/waits")["edges"]
        return edges if {edge["lock"] for edge in edges} >= {a, b} else None

    edges = [e for e in wait_for(both_edges, 10, "both edges in /v1/waits") if e["lock"] in (a, b)]
    by_lock = {edge["lock"]: edge for edge in edges}
    assert by_lock[b]["waiter"]["pid"] == by_lock[a]["holder"]["pid"] == split.proc.pid
    assert by_lock[b]["waiter"]["thread"] != by_lock[a]["holder"]["thread"], "the two threads are one owner"
    time.sleep(2 * 0.5 + 0.5)  # past two detection intervals
    assert api(server, "/v1/deadlocks")["deadlocks"] == []
    split.finish()  # the holding thread lets A go: the other process gets it, then B goes to the waiting thread
    holder.wait_event("got-second", timeout=30)
    split.wait_event("done", timeout=30)


def test_a_three_party_cycle_ends_when_a_timed_waiter_gives_up(
    server: ApiServer, etcd_url: str, workers: list[ChildProcess]
) -> None:
    tag = uuid.uuid4().hex[:8]
    a, b, c = (f"dl-{tag}-{x}" for x in "abc")
    procs = [child(etcd_url, "cross", a, b), child(etcd_url, "cross", b, c), child(etcd_url, "cross", c, a, wait=6)]
    workers += procs
    for proc in procs:
        proc.wait_event("holding")
    for proc in procs:
        proc.send("go")
    (deadlock,) = wait_for(lambda: api(server, "/v1/deadlocks")["deadlocks"], 10, "the three-party deadlock")
    assert sorted(deadlock["locks"]) == sorted([a, b, c])
    assert {owner["pid"] for owner in deadlock["owners"]} == {proc.proc.pid for proc in procs}
    procs[2].wait_event("gave-up", timeout=20)  # its wait for A ran out: the cycle opens, nothing was broken
    for proc in procs:
        proc.wait_event("done", timeout=30)
    assert deadlock["id"] in [r["id"] for r in ended(server)["resolved"]]


def test_an_opt_in_setting_breaks_the_suggested_lock_after_a_while_audited(
    etcd: EtcdMember, etcd_url: str, workers: list[ChildProcess]
) -> None:
    """``deadlock_break_after``: the sidecar breaks the youngest hold of a deadlock that lasted that long, once,
    at the token it reported, with an audit record naming the deadlock; both processes finish on their own.
    (Without the setting the cycle stays until an operator breaks it: the first test of this module.)"""
    settings = Settings(
        backend_url=f"lockd+etcd3+http://{etcd.endpoint}?lease_ttl=5", admin_token=TOKEN, deadlock_break_after=1.0
    )
    with ApiServer(settings) as auto:
        crossed = cross(etcd_url, workers)
        found = wait_for(lambda: api(auto, "/v1/deadlocks")["deadlocks"], 10, "the deadlock to be reported")
        youngest = crossed.youngest
        assert found[0]["suggested_break"] == youngest
        crossed.finish()
        (record,) = httpx.get(f"{auto.url}/v1/audit", params={"name": youngest}, timeout=5).json()["breaks"]
        assert record["token"] == crossed.tokens[youngest]
        assert found[0]["id"] in record["requested_by"] and "deadlock_break_after" in record["requested_by"]
        resolved = wait_for(lambda: api(auto, "/v1/deadlocks")["resolved"], 10, "the deadlock to end")
        assert resolved[0]["id"] == found[0]["id"] and resolved[0]["how"].endswith("was broken")
        other = crossed.a if youngest == crossed.b else crossed.b
        assert httpx.get(f"{auto.url}/v1/audit", params={"name": other}, timeout=5).json()["breaks"] == []
