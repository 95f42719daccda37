"""Durations typed by people, and back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.access.durations import format_duration, format_remaining, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", timedelta(hours=2)),
        ("30m", timedelta(minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        (" 2H ", timedelta(hours=2)),
        ("0h5m", timedelta(minutes=5)),
    ],
)
def test_parse_duration_accepts_units_and_combinations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "2", "h", "2x", "1.5h", "-1h", "2 h", "1h1h", "30m1h", "h2", "\u0661h", "1h-30m"]
)
def test_parse_duration_rejects_malformed_text_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0s", "0h0m", "0d"])
def test_parse_duration_rejects_zero(text: str) -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=8), "1w1d"),
        (timedelta(seconds=59, microseconds=999_999), "59s"),
        (timedelta(0), "0s"),
        (timedelta(minutes=-5), "-5m"),
    ],
)
def test_format_duration(delta: timedelta, expected: str) -> None:
    assert format_duration(delta) == expected


@given(st.integers(min_value=1, max_value=10**9))
def test_format_then_parse_round_trips(seconds: int) -> None:
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta


def test_format_remaining_keeps_the_two_largest_units() -> None:
    assert format_remaining(timedelta(days=6, hours=23, minutes=59, seconds=1)) == "6d23h"
    assert format_remaining(timedelta(hours=1, minutes=59, seconds=59)) == "1h59m"
    assert format_remaining(timedelta(seconds=45)) == "45s"
