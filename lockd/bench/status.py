"""Status transitions: lockd's etcd store against stock etcd3gw read-then-write, on the same etcd, in one run.

Not a test: it prints numbers. ``run_status_bench(backend_url)`` returns them as a dict for ``lockd bench``;
``python -m lockd.bench.status --backend-url lockd+etcd3+http://127.0.0.1:2379`` prints them.

Measured:
  uncontended   transitions/s from one process: one resource moved back and forth (the store's read cache
                is warm: one txn each), and resources this store never saw (a read and a txn each).
  stock         the same loop with etcd3gw: naive ``get`` + ``put`` (not atomic), and ``get`` + ``replace``
                (etcd3gw's value-compare txn, atomic but without fencing or history).
  race          ``contenders`` processes released by a barrier move one resource available -> deleting:
                winners (must be 1), etcd calls per loser (2 = read + txn: no retry storm), each contender's
                own call time (winner and losers) next to one read round trip measured alone, and how long
                after the winner the last loser returned together with the spread of start times after the
                barrier (on few cores, scheduling 32 processes dominates that gap, not etcd).
                The naive get+put race of the same shape counts its winners.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
import urllib.parse
import uuid
from typing import Any

from lockd.etcd import keys
from lockd.etcd.client import EtcdClient
from lockd.options import parse_backend_url
from lockd.status.etcd_store import EtcdStatusStore

_mp = multiprocessing.get_context("fork")


class _CountingClient(EtcdClient):
    """An EtcdClient that counts its round trips (every request goes through ``_call``)."""

    calls = 0

    def _call(self, path: str, body: dict[str, Any], *args: Any, **kwargs: Any) -> tuple[dict[str, Any], bool]:
        # Whatever else EtcdClient._call takes (timeout, urgent, deadline, ...) passes through untouched.
        self.calls += 1
        return super()._call(path, body, *args, **kwargs)


def _store(backend_url: str) -> EtcdStatusStore:
    return EtcdStatusStore(_CountingClient(parse_backend_url(backend_url)), owns_client=True)


def _stock_client(backend_url: str) -> Any:
    import etcd3gw

    host, port = parse_backend_url(backend_url).endpoints[0]
    return etcd3gw.client(host=host, port=port)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_uncontended(backend_url: str, n: int) -> dict[str, float]:
    store = _store(backend_url)
    vid = f"bench-{uuid.uuid4()}"
    store.compare_and_set("volume", vid, [None], "available")
    start = time.perf_counter()
    for i in range(n):
        old, new = ("available", "deleting") if i % 2 == 0 else ("deleting", "available")
        assert store.compare_and_set("volume", vid, [old], new).ok
    same = _rate(n, time.perf_counter() - start)

    ids = [f"bench-{uuid.uuid4()}" for _ in range(n)]
    for rid in ids:
        store.compare_and_set("volume", rid, [None], "available")
    cold = _store(backend_url)  # a store that never saw these resources: no cached guess
    start = time.perf_counter()
    for rid in ids:
        assert cold.compare_and_set("volume", rid, ["available"], "deleting").ok
    fresh = _rate(n, time.perf_counter() - start)
    calls_per = cold.client.calls / n  # type: ignore[attr-defined]
    store.close()
    cold.close()
    return {"same_resource_per_s": same, "fresh_resources_per_s": fresh, "fresh_calls_per_transition": calls_per}


def bench_stock(backend_url: str, n: int) -> dict[str, float]:
    client = _stock_client(backend_url)
    key = keys.status_key("bench-stock", str(uuid.uuid4())).decode()
    client.put(key, "available")
    start = time.perf_counter()
    for i in range(n):
        old, new = ("available", "deleting") if i % 2 == 0 else ("deleting", "available")
        if client.get(key)[0].decode() == old:  # check, then write in a second step: the race
            client.put(key, new)
    naive = _rate(n, time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(n):
        old, new = ("available", "deleting") if i % 2 == 0 else ("deleting", "available")
        current = client.get(key)[0].decode()
        assert current == old and client.replace(key, current, new)
    replace = _rate(n, time.perf_counter() - start)
    client.delete(key)
    return {"naive_get_put_per_s": naive, "get_replace_per_s": replace}


def _racer(backend_url: str, vid: str, barrier: Any, results: Any) -> None:
    try:
        store = _store(backend_url)
        store.get_record("volume", f"warm-{vid}")  # open the connection before the start line
        store.client.calls = 0  # type: ignore[attr-defined]
        barrier.wait(60)
        start = time.monotonic()
        result = store.compare_and_set("volume", vid, ["available", "error"], "deleting")
        end = time.monotonic()
        results.put((result.ok, end, store.client.calls, start))  # type: ignore[attr-defined]
        store.close()
    except BaseException as exc:
        results.put(("error", 0.0, 0, repr(exc)))


def _naive_racer(backend_url: str, vid: str, barrier: Any, results: Any) -> None:
    try:
        client = _stock_client(backend_url)
        key = keys.status_key("bench-naive", vid).decode()
        client.get(key)
        barrier.wait(60)
        found = client.get(key)
        won = bool(found) and found[0].decode() in ("available", "error")
        if won:
            client.put(key, "deleting")
        results.put((won, time.monotonic(), 2, 0.0))
    except BaseException as exc:
        results.put(("error", 0.0, 0, repr(exc)))


def _race_once(backend_url: str, contenders: int, naive: bool) -> list[tuple[Any, float, int, Any]]:
    vid = f"race-{uuid.uuid4()}"
    if naive:
        _stock_client(backend_url).put(keys.status_key("bench-naive", vid).decode(), "available")
    else:
        seed = _store(backend_url)
        seed.compare_and_set("volume", vid, [None], "available")
        seed.close()
    barrier, results = _mp.Barrier(contenders), _mp.Queue()
    target = _naive_racer if naive else _racer
    procs = [_mp.Process(target=target, args=(backend_url, vid, barrier, results)) for _ in range(contenders)]
    for proc in procs:
        proc.start()
    answers = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
    errors = [a for a in answers if a[0] == "error"]
    if errors:
        raise RuntimeError(f"racer failed: {errors[0][3]}")
    return answers


def _txn_round_trip_ms(backend_url: str, n: int = 200) -> float:
    store = _store(backend_url)
    vid = f"rtt-{uuid.uuid4()}"
    store.compare_and_set("volume", vid, [None], "a")
    samples = []
    for i in range(n):
        start = time.perf_counter()
        store.client.get(keys.status_key("volume", vid))
        samples.append(time.perf_counter() - start)
        del i
    store.close()
    return statistics.median(samples) * 1000


def bench_race(backend_url: str, contenders: int, rounds: int) -> dict[str, Any]:
    winners, loser_calls, lag_ms, naive_winners = [], [], [], []
    loser_ms: list[float] = []
    winner_ms: list[float] = []
    skew_ms: list[float] = []
    for _ in range(rounds):
        answers = _race_once(backend_url, contenders, naive=False)
        won = [a for a in answers if a[0] is True]
        lost = [a for a in answers if a[0] is False]
        winners.append(len(won))
        loser_calls.extend(a[2] for a in lost)
        if won and lost:
            lag_ms.append((max(a[1] for a in lost) - won[0][1]) * 1000)
        winner_ms.extend((a[1] - a[3]) * 1000 for a in won)
        loser_ms.extend((a[1] - a[3]) * 1000 for a in lost)
        skew_ms.append((max(a[3] for a in answers) - min(a[3] for a in answers)) * 1000)
        naive_winners.append(sum(1 for a in _race_once(backend_url, contenders, naive=True) if a[0] is True))
    return {
        "contenders": contenders,
        "rounds": rounds,
        "winners_per_round": winners,
        "loser_calls_max": max(loser_calls),
        "loser_calls_mean": statistics.fmean(loser_calls),
        "winner_call_ms_median": statistics.median(winner_ms),
        "loser_call_ms_median": statistics.median(loser_ms),
        "loser_call_ms_p90": sorted(loser_ms)[int(0.9 * (len(loser_ms) - 1))],
        "start_skew_ms_median": statistics.median(skew_ms),
        "last_loser_after_winner_ms_median": statistics.median(lag_ms) if lag_ms else None,
        "last_loser_after_winner_ms_max": max(lag_ms) if lag_ms else None,
        "read_round_trip_ms": _txn_round_trip_ms(backend_url),
        "naive_winners_per_round": naive_winners,
    }


def run_status_bench(backend_url: str, transitions: int = 2000, contenders: int = 32, rounds: int = 5) -> dict:
    """Run every status measurement against the etcd behind ``backend_url`` (a lockd+etcd3 URL).

    Returns a dict: ``uncontended`` (lockd rates), ``stock`` (etcd3gw rates), ``ratio`` (lockd same-resource
    rate over stock get+replace and over naive get+put), ``race`` (see the module doc), ``floor_500_per_s``.
    """
    uncontended = bench_uncontended(backend_url, transitions)
    stock = bench_stock(backend_url, transitions)
    race = bench_race(backend_url, contenders, rounds)
    return {
        "backend": urllib.parse.urlsplit(backend_url)._replace(query="").geturl(),
        "uncontended": uncontended,
        "stock": stock,
        "ratio": {
            "vs_get_replace": uncontended["same_resource_per_s"] / stock["get_replace_per_s"],
            "vs_naive_get_put": uncontended["same_resource_per_s"] / stock["naive_get_put_per_s"],
        },
        "race": race,
        "floor_500_per_s": min(uncontended["same_resource_per_s"], uncontended["fresh_resources_per_s"]) >= 500,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend-url", required=True, help="lockd+etcd3+http://HOST:PORT")
    parser.add_argument("--transitions", type=int, default=2000)
    parser.add_argument("--contenders", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run_status_bench(args.backend_url, args.transitions, args.contenders, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    u, s, r = result["uncontended"], result["stock"], result["race"]
    print(f"lockd status, same resource      {u['same_resource_per_s']:8.0f} transitions/s")
    print(f"lockd status, fresh resources    {u['fresh_resources_per_s']:8.0f} transitions/s")
    print(f"  ({u['fresh_calls_per_transition']:.2f} etcd calls each)")
    print(f"stock etcd3gw get+replace        {s['get_replace_per_s']:8.0f} transitions/s")
    print(f"stock etcd3gw get+put (racy)     {s['naive_get_put_per_s']:8.0f} transitions/s")
    print(f"ratio lockd / get+replace        {result['ratio']['vs_get_replace']:8.2f}x")
    print(f"floor >= 500/s                   {'met' if result['floor_500_per_s'] else 'MISSED'}")
    print(f"race x{r['contenders']}, {r['rounds']} rounds: winners {r['winners_per_round']}, ", end="")
    print(f"naive winners {r['naive_winners_per_round']}")
    print(f"  etcd calls per loser: max {r['loser_calls_max']}, mean {r['loser_calls_mean']:.2f}")
    print(
        f"  one call: winner {r['winner_call_ms_median']:.2f} ms, loser {r['loser_call_ms_median']:.2f} ms "
        f"(p90 {r['loser_call_ms_p90']:.2f}); one read round trip {r['read_round_trip_ms']:.2f} ms"
    )
    print(
        f"  last loser returned {r['last_loser_after_winner_ms_median']:.2f} ms (median; max "
        f"{r['last_loser_after_winner_ms_max']:.2f}) after the winner, of which start skew after the barrier "
        f"(32 processes on this machine's cores) {r['start_skew_ms_median']:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
