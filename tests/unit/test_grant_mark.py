"""A grant mark passes on the waiters known to follow (lockd.lock): packed, it must give back exactly what was
packed; a mark of the JSON form lockd wrote before packing is still read; anything else passes on nobody (the
next release reads the queue instead)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from lockd.lock import _CHAIN, _GRANTED, _mark, _successors

ascii_ = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60)
holder = st.dictionaries(ascii_, st.text(max_size=30) | st.integers() | st.floats(allow_nan=False), max_size=7)
waiters = st.lists(
    st.tuples(ascii_.map(lambda w: b"/lockd/queue/n%20ame/" + w.encode()), holder.map(lambda h: json.dumps(
        h, separators=(",", ":")).encode())),
    max_size=12,
)  # fmt: skip


@given(waiters)
def test_a_packed_mark_gives_back_the_waiters_it_passes_on(known) -> None:
    marked = _mark(known)
    assert marked.startswith(_GRANTED)
    assert _successors(marked) == known[:_CHAIN]


@given(waiters)
def test_a_mark_of_the_json_form_is_still_read(known) -> None:
    old = _GRANTED + json.dumps([[k.decode(), v.decode()] for k, v in known]).encode()
    assert _successors(old) == known


def test_an_unreadable_mark_passes_on_nobody() -> None:
    for marked in (_GRANTED + b"z\x00garbage", _GRANTED + b"{", _GRANTED + b"zx", _GRANTED + b'[["k"]]'):
        assert _successors(marked) == []
    assert _successors(_GRANTED) == []


def _holder(i: int) -> tuple[bytes, bytes]:
    waiter = f"{0x694D8A3B1C2E4F50 + i:x}-{0x0123456789ABCDEF * (i + 1) % 2**64:016x}"
    value = {
        "member": f"cinder-volume-{i}",
        "host": f"node-{i % 3}",
        "pid": 4000 + i,
        "thread": 140000000000 + i,
        "acquired_at": 1796000000.123 + i,
        "waiter": waiter,
    }
    return b"/lockd/queue/volume-1/" + waiter.encode(), json.dumps(value, separators=(",", ":")).encode()


def test_a_packed_mark_of_seven_holders_is_a_fraction_of_their_json() -> None:
    known = [_holder(i) for i in range(7)]
    plain = len(json.dumps([[k.decode(), v.decode()] for k, v in known]))
    assert len(_mark(known)) < plain / 2
