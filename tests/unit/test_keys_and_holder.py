"""Key layout and holder decoding: the parts of the wire format other clients and the admin API rely on."""

from __future__ import annotations

import json
import os

import pytest

from lockd.errors import UsageError
from lockd.etcd import keys
from lockd.lock import Holder, validate_name


def test_lock_key_is_stock_tooz_layout() -> None:
    assert keys.lock_key("cinder-abc-delete_volume") == b"/tooz/lockscinder-abc-delete_volume"


def test_queue_ranges_of_names_do_not_overlap() -> None:
    # "a" and "a/b" must not see each other's waiters.
    a, ab = keys.queue_prefix("a"), keys.queue_prefix("a/b")
    assert not ab.startswith(a)
    assert keys.queue_name(keys.queue_key("a/b", "w1")) == "a/b"


def test_range_end_covers_exactly_the_prefix() -> None:
    end = keys.range_end(b"/lockd/queue/x/")
    assert b"/lockd/queue/x/" < b"/lockd/queue/x/zzz" < end
    assert not b"/lockd/queue/x0" < end


def test_stock_tooz_value_has_no_holder() -> None:
    holder = Holder.decode(os.urandom(16))
    assert not holder.is_lockd and holder.member is None


def test_lockd_value_names_the_holder() -> None:
    value = json.dumps({"member": "m", "host": "h", "pid": 7, "acquired_at": 1.5, "waiter": "w"}).encode()
    assert Holder.decode(value) == Holder("m", "h", 7, 1.5, "w")


@pytest.mark.parametrize("name", ["", "x" * 513, "vol-é", "tab\there", "nl\n", b"\xff"])
def test_invalid_names_are_value_errors(name: str | bytes) -> None:
    with pytest.raises(ValueError):
        validate_name(name)
    with pytest.raises(UsageError):
        validate_name(name)


def test_longest_valid_name() -> None:
    assert validate_name("x" * 512) == "x" * 512
