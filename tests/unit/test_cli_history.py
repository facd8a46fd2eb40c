"""How `lockd history` reads ``--since`` and prints durations and times (lockd.cli.history), without a sidecar."""

from __future__ import annotations

import argparse
import datetime
import time

import pytest

from lockd.cli.history import duration, moment, since


def test_a_number_is_seconds_ago() -> None:
    before = time.time()
    value = since("300")
    after = time.time()
    assert before - 300 <= value <= after - 300
    assert since("0.5") <= time.time() - 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-07-12T12:03:05Z", datetime.datetime(2026, 7, 12, 12, 3, 5, tzinfo=datetime.timezone.utc)),
        (
            "2026-07-12 14:03:05.250+02:00",
            datetime.datetime(2026, 7, 12, 12, 3, 5, 250000, tzinfo=datetime.timezone.utc),
        ),
        ("2026-07-12T14:03", datetime.datetime(2026, 7, 12, 14, 3)),  # no offset: local time
        ("2026-07-12", datetime.datetime(2026, 7, 12)),
    ],
)
def test_anything_else_is_an_iso_8601_time(text: str, expected: datetime.datetime) -> None:
    assert since(text) == expected.timestamp()


@pytest.mark.parametrize("text", ["noon", "-5", "nan", "inf", "", "5m", "1969-12-31T23:59:59Z", "2026-13-01"])
def test_anything_else_is_refused_with_what_it_accepts(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        since(text)


def test_durations_read_at_every_scale() -> None:
    assert [duration(v) for v in (None, 0.00042, 0.0123, 1.5, 59.0, 303.0)] == [
        "-", "0.42ms", "12.3ms", "1.5s", "59s", "5m03s",
    ]  # fmt: skip


def test_times_are_local_with_their_offset_to_the_millisecond() -> None:
    when = datetime.datetime(2026, 7, 12, 12, 3, 5, 120000, tzinfo=datetime.timezone.utc)
    shown = moment(when.timestamp())
    assert datetime.datetime.fromisoformat(shown) == when  # the same moment, whatever the local zone
    assert shown[10] == " " and shown[19:23] == ".120" and shown[23] in "+-", shown
    assert moment(None) == "-"
