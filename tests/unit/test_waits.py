"""lockd.api.waits: cycles in the wait-for graph (the live cases are tests/integration/test_deadlocks.py)."""

from __future__ import annotations

from lockd.api.waits import DeadlockTracker, Edge, Owner, cycle_id, cycles


def owner(n: int, thread: int = 1) -> Owner:
    return Owner(f"m{n}", "host", 100 + n, thread)


def edge(waiter: Owner, holder: Owner, lock: str, token: int) -> Edge:
    return Edge(waiter, holder, lock, None, token)


def test_a_three_party_cycle_is_found_once_with_a_stable_id() -> None:
    a, b, c = owner(1), owner(2), owner(3)
    ring = [edge(a, b, "x", 5), edge(b, c, "y", 9), edge(c, a, "z", 7)]
    found = cycles(ring)
    assert len(found) == 1 and {e.lock for e in found[0]} == {"x", "y", "z"}
    assert cycle_id(found[0]) == cycle_id(cycles(list(reversed(ring)))[0])


def test_chains_and_stock_holders_are_no_cycle() -> None:
    a, b, stock = owner(1), owner(2), Owner(None, None, None, None)
    assert cycles([edge(a, b, "x", 1), edge(b, stock, "y", 2)]) == []


def test_owners_with_unknown_fields_are_walked_as_the_others() -> None:
    # A holder value lockd did not write may name no pid or thread: the walk orders such owners too.
    a, b, c = Owner("m1", "host", None, None), Owner("m1", "host", 101, 1), Owner("m1", None, 7, 1)
    found = cycles([edge(a, b, "x", 1), edge(b, c, "y", 2), edge(c, a, "z", 3), edge(owner(4), a, "x", 1)])
    assert [{e.lock for e in ring} for ring in found] == [{"x", "y", "z"}]


def test_two_threads_of_one_process_are_two_owners() -> None:
    holding, waiting, other = owner(1, thread=1), owner(1, thread=2), owner(2)
    assert cycles([edge(waiting, other, "b", 2), edge(other, holding, "a", 1)]) == []


def test_the_tracker_suggests_the_youngest_hold_and_records_the_end() -> None:
    a, b = owner(1), owner(2)
    ring = [edge(a, b, "x", 5), edge(b, a, "y", 9)]
    tracker = DeadlockTracker(lambda: ring)
    tracker.update(ring, now=10.0)
    (found,) = tracker.current()
    assert found.suggested_break == "y" and found.since == 10.0
    tracker.update(ring, now=11.0)
    assert [d.since for d in tracker.current()] == [10.0]
    tracker.update([edge(a, b, "x", 5)], now=12.0)
    assert tracker.current() == []
    (ended,) = tracker.resolved()
    assert ended.id == found.id and ended.ended == 12.0 and "stopped waiting" in ended.how


def test_the_opt_in_break_comes_once_per_deadlock_after_its_delay() -> None:
    a, b = owner(1), owner(2)
    ring = [edge(a, b, "x", 5), edge(b, a, "y", 9)]
    broken: list[tuple[str, int]] = []
    tracker = DeadlockTracker(
        lambda: ring, break_after=2.0, breaker=lambda d: broken.append((d.victim.lock, d.victim.token))
    )
    tracker.update(ring, now=10.0)
    tracker._break_due(11.0)
    assert broken == [], "broken before the delay"
    assert tracker._breaks_due(), "the loop must keep looking while a break is due, though nothing changes"
    tracker._break_due(12.0)
    tracker._break_due(13.0)
    assert broken == [("y", 9)], "the youngest hold, at its token, once"
    assert not tracker._breaks_due()


def test_without_the_setting_nothing_is_ever_broken() -> None:
    a, b = owner(1), owner(2)
    ring = [edge(a, b, "x", 5), edge(b, a, "y", 9)]
    tracker = DeadlockTracker(lambda: ring)
    tracker.update(ring, now=10.0)
    tracker._break_due(1e9)
    assert not tracker._breaks_due() and len(tracker.current()) == 1


def test_a_deadlock_ended_by_a_break_says_so() -> None:
    a, b = owner(1), owner(2)
    ring = [edge(a, b, "x", 5), edge(b, a, "y", 9)]
    tracker = DeadlockTracker(lambda: ring, was_broken=lambda name, token: (name, token) == ("y", 9))
    tracker.update(ring, now=10.0)
    tracker.update([edge(b, owner(3), "y", 12)], now=11.0)  # "y" broken: a got it, b waits behind a new holder
    (ended,) = tracker.resolved()
    assert ended.how == "'y' (token 9) was broken"
