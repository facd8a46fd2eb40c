"""The etcd status store writes a record from history entries it encoded before (lockd.status.etcd_store):
the bytes must be what json.dumps writes for the same record, whatever the fields hold."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from lockd.status.etcd_store import _encode

text = st.text(max_size=40)
entries = st.lists(
    st.fixed_dictionaries(
        {
            "who": text,
            "at": st.floats(allow_nan=False, allow_infinity=False),
            "from": st.none() | text,
            "to": text,
            "token": st.none() | st.integers(min_value=0, max_value=2**63),
        }
    ),
    max_size=20,
)


@given(
    status=text,
    fence=st.none() | st.integers(min_value=0, max_value=2**63),
    epoch=st.none() | text,
    history=entries,
    write=text,
)
def test_a_record_encoded_from_its_entries_is_json_dumps_of_it(status, fence, epoch, history, write) -> None:
    parts = [json.dumps(entry, separators=(",", ":")) for entry in history]
    record = {"status": status, "fence": fence, "epoch": epoch, "history": history, "write": write}
    assert _encode(status, fence, epoch, parts, write) == json.dumps(record, separators=(",", ":")).encode()
