"""The hold history and the contention profile, without etcd: lockd.api.history, lockd.api.profile, and how the
lock view turns watch events into holds (lockd.api.view.LockView._apply fed synthetic events).

The memory test fills the history to its default bound (100,000 holds) with names that are all different and
owners decoded afresh per hold, as the watch produces them, and prints the RSS growth.
"""

from __future__ import annotations

import gc
import json
import time
import uuid
from pathlib import Path

import pytest

from lockd.api.history import HoldLog
from lockd.api.profile import OTHER, Profile, fold, quantile
from lockd.api.view import LockView
from lockd.etcd import keys
from lockd.etcd.watch import Event
from lockd.etcd.wire import KeyValue
from lockd.metrics import Metrics

OWNER = ("cinder-volume@host-a", "host-a", 4242, 140001)


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_full_history_of_100000_holds_stays_far_below_300_mb() -> None:
    log = HoldLog()  # the defaults: 100,000 holds or an hour
    hosts = [f"host-{i}" for i in range(8)]
    gc.collect()
    before = _rss_bytes()
    now = time.time()
    for i in range(120_000):  # more than the bound: the oldest go
        host = hosts[i % 8]
        # fresh string objects per hold, as json.loads of each holder value gives them
        member = "".join(["cinder-volume@", host])
        name = f"cinder-{uuid.uuid4()}-delete_volume"
        log.append(name, "cinder-{id}-delete_volume", (member, host, 1000 + i % 50, 140000 + i % 7), i + 1,
                   now - 1.0, 0.01, now, "released")  # fmt: skip
    gc.collect()
    grown = _rss_bytes() - before
    print(f"\nRSS growth with {len(log)} holds in the history: {grown / 2**20:.1f} MiB ({grown / len(log):.0f} B/hold)")
    assert len(log) == 100_000
    assert grown < 300 * 2**20


def test_pages_go_from_newest_to_oldest_and_filters_apply() -> None:
    log = HoldLog()
    now = time.time()
    for i in range(25):
        name = f"lock-{i % 3}"
        log.append(name, fold(name), OWNER, 100 + i, now - 1, None, now + i, "released")
    first, cursor = log.page(limit=10)
    assert [h.token for h in first] == list(range(124, 114, -1))
    second, cursor2 = log.page(limit=10, before=cursor)
    third, end = log.page(limit=10, before=cursor2)
    assert [h.token for h in second] == list(range(114, 104, -1))
    assert [h.token for h in third] == list(range(104, 99, -1)) and end is None
    only, _ = log.page(name="lock-1", limit=100)
    assert {h.name for h in only} == {"lock-1"} and len(only) == 8
    recent, _ = log.page(since=now + 20, limit=100)
    assert [h.token for h in recent] == [124, 123, 122, 121, 120]
    exact, more = log.page(name="lock-0", limit=9)  # exactly the matching ones: no next page
    assert len(exact) == 9 and more is None


def test_the_history_drops_by_count_and_by_age_and_cursors_outlive_dropped_holds() -> None:
    log = HoldLog(max_holds=5, max_age=60)
    now = time.time()
    for i in range(8):
        log.append("n", "n", OWNER, i, now, None, now, "released")
    assert [h.token for h in log.page(limit=100)[0]] == [7, 6, 5, 4, 3]
    page, cursor = log.page(limit=2)
    log.append("n", "n", OWNER, 8, now, None, now + 61, "released")  # everything else is now over a minute old
    assert [h.token for h in log.page(limit=100)[0]] == [8]
    assert log.page(limit=2, before=cursor) == ([], None)
    assert HoldLog(max_holds=0).page() == ([], None)


def test_fold_takes_uuids_out_of_names_and_the_template_set_is_capped() -> None:
    vid = str(uuid.uuid4())
    assert fold(f"cinder-{vid}-delete_volume") == "cinder-{id}-delete_volume"
    assert fold(f"{vid.replace('-', '')}-{vid}") == "{id}-{id}"
    assert fold("cinder-volume-manager") == "cinder-volume-manager"
    assert fold("test-ae7ee84ef650") == "test-{id}" and fold("deadbeefcafe-lock") == "deadbeefcafe-lock"
    profile = Profile(max_templates=2)
    for template in ("a", "b", "c", "d"):
        profile.acquired(template, 0.5)
    rows = {row.template: row for row in profile.rows({"e": 3})}
    assert set(rows) == {"a", "b", OTHER}
    assert rows[OTHER].acquisitions == 2 and rows[OTHER].waiters == 3
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0 and quantile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0


def test_prometheus_template_labels_are_capped_into_other() -> None:
    metrics = Metrics()
    metrics.template_labels = 3
    for i in range(10):
        metrics.observe_hold(f"t{i}", 0.1)
    text = metrics.render().decode()
    labels = {line.split('template="', 1)[1].split('"', 1)[0] for line in text.splitlines()
              if line.startswith("lockd_lock_hold_seconds_count")}  # fmt: skip
    assert labels == {"t0", "t1", "t2", OTHER}


# -- the view's event path ---------------------------------------------------------------------------------------


class _Feed:
    """Synthetic watch batches for a LockView that never talks to etcd."""

    def __init__(self) -> None:
        self.view = LockView(client=None)  # type: ignore[arg-type]
        self.view._error = None
        self.revision = 100

    def holder(self, waiter: str, member: str = "m1", template: str | None = None) -> bytes:
        record = {"member": member, "host": "h1", "pid": 7, "thread": 9, "acquired_at": time.time(), "waiter": waiter}
        if template:
            record["template"] = template
        return json.dumps(record).encode()

    def batch(self, *events: tuple[str, bytes, bytes, int]) -> int:
        """Events of one revision: (op, key, value, lease) with op "put" or "del"."""
        self.revision += 1
        out = []
        for op, key, value, lease in events:
            kv = KeyValue(
                key, value, self.revision, self.revision, 2 if op == "put" and self._exists(key) else 1, lease
            )
            out.append(Event(op == "del", kv))
        self.view._apply(out)
        return self.revision

    def _exists(self, key: bytes) -> bool:
        return key.startswith(keys.TOOZ_LOCK_PREFIX) and keys.lock_name(key) in self.view._locks


def test_the_view_records_release_grant_break_and_lease_loss_with_the_wait_it_saw() -> None:
    feed = _Feed()
    name = f"vol-{uuid.uuid4()}"
    lock = keys.lock_key(name)
    q1, q2 = keys.queue_key(name, "w1"), keys.queue_key(name, "w2")
    feed.batch(("put", q1, feed.holder("w1"), 1))
    first = feed.batch(("put", lock, feed.holder("w1"), 1))
    feed.batch(("put", q2, feed.holder("w2", member="m2"), 2))
    time.sleep(0.05)
    # w1 grants to w2: the key is put for w2, w2's entry marked, w1's entry deleted
    second = feed.batch(
        ("put", lock, feed.holder("w2", member="m2"), 2), ("put", q2, b"granted", 2), ("del", q1, b"", 0)
    )
    feed.batch(("del", lock, b"", 0), ("put", keys.audit_key(name, second), b"{}", 0), ("del", q2, b"", 0))
    holds, _ = feed.view.history.page()
    assert [(h.token, h.member, h.how) for h in holds] == [(second, "m2", "broken"), (first, "m1", "released")]
    assert holds[0].waited is not None and holds[0].waited >= 0.05, "w2 waited from its entry's appearance"
    assert holds[1].template == "vol-{id}"
    # a member record and the lock on its lease deleted in one revision: the lease ended, the hold was lost
    feed.batch(("put", keys.member_key("m3"), json.dumps({"member": "m3"}).encode(), 3))
    third = feed.batch(("put", lock, feed.holder("w3", member="m3"), 3))
    assert [h.token for h in feed.view.holding()] == [third]
    feed.batch(("del", lock, b"", 0), ("del", keys.member_key("m3"), b"", 0))
    (lost,), _ = feed.view.history.page(limit=1)
    assert (lost.token, lost.how) == (third, "lost")
    assert feed.view.holding() == []
    (row,) = [r for r in feed.view.profile.rows({}) if r.template == "vol-{id}"]
    assert row.acquisitions == 3


def test_a_holder_writing_its_own_key_again_is_one_hold() -> None:
    feed = _Feed()
    lock = keys.lock_key("same-holder")
    feed.batch(("put", lock, feed.holder("w1", template="vol-{volume.id}"), 1))
    feed.batch(("put", lock, feed.holder("w1", template="vol-{volume.id}"), 1))
    feed.batch(("del", lock, b"", 0))
    (hold,), _ = feed.view.history.page()
    assert hold.how == "released" and hold.template == "vol-{volume.id}"
    assert [r.acquisitions for r in feed.view.profile.rows({})] == [1]


@pytest.mark.parametrize("key", [keys.AUDIT_PREFIX + b"x/notanumber", keys.AUDIT_PREFIX + b"nothing"])
def test_audit_keys_that_are_not_break_records_break_nothing(key: bytes) -> None:
    assert keys.audit_entry(key) is None
    assert keys.audit_entry(keys.audit_key("a/b c", 42)) == ("a/b c", 42)


def test_a_full_read_records_the_holds_that_ended_unseen_and_only_those() -> None:
    """After a broken watch (lockd.api.view._install): a hold gone, or at another holder, ended between the view's
    last batch and the read; one whose holder wrote its key again (a new token, the same waiter) goes on."""
    feed = _Feed()
    gone, other, again = (keys.lock_key(f"unseen-{what}") for what in ("gone", "other", "again"))
    feed.batch(("put", gone, feed.holder("w1"), 1), ("put", other, feed.holder("w2"), 1))
    feed.batch(("put", again, feed.holder("w3"), 1))
    last_batch = time.time()
    tokens = {lock.name: lock.token for lock in feed.view.holding()}
    feed.revision += 5  # what the watch missed: "gone" released, "other" taken by w4, "again" written again by w3
    kvs = [KeyValue(other, feed.holder("w4"), feed.revision, feed.revision, 1, 1),
           KeyValue(again, feed.holder("w3"), tokens["unseen-again"], feed.revision, 2, 1)]  # fmt: skip
    read = time.time()
    feed.view._install(kvs, [], [], feed.revision, read, read + 0.5)
    holds, _ = feed.view.history.page()
    assert sorted((h.name, h.token, h.how) for h in holds) == [
        ("unseen-gone", tokens["unseen-gone"], "unobserved"),
        ("unseen-other", tokens["unseen-other"], "unobserved"),
    ]
    for hold in holds:
        assert hold.ended_between is not None
        low, high = hold.ended_between
        assert low <= last_batch <= read and high == read + 0.5 == hold.ended and hold.held is None
    assert {(lock.name, lock.holder.waiter) for lock in feed.view.holding()} == {
        ("unseen-other", "w4"),
        ("unseen-again", "w3"),
    }
    assert all(row.hold_p50 is None for row in feed.view.profile.rows({})), "an unseen end is no hold length"
