from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workflow_core.engine.durations import parse_duration, parse_timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT10M", timedelta(minutes=10)),
        ("P1D", timedelta(days=1)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("PT0.5S", timedelta(seconds=0.5)),
        ("P1W", timedelta(weeks=1)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT45S", timedelta(seconds=45)),
        ("P2W3DT4H5M6S", timedelta(weeks=2, days=3, hours=4, minutes=5, seconds=6)),
        ("PT0S", timedelta(0)),
        (" PT10M ", timedelta(minutes=10)),
    ],
)
def test_iso_8601_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, timedelta(0)), (30, timedelta(seconds=30)), (1.5, timedelta(seconds=1.5))],
)
def test_numbers_are_seconds(seconds: float, expected: timedelta) -> None:
    assert parse_duration(seconds) == expected


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.5,
        True,
        False,
        "P",
        "PT",
        "P1DT",
        "P1M",
        "P1Y",
        "P1Y2M",
        "PT-5M",
        "P-1D",
        "10",
        "10 minutes",
        "garbage",
        "",
        "T10M",
        "PT10M extra",
        None,
        [10],
        {"minutes": 10},
    ],
)
def test_what_is_not_a_duration_is_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value", ["P99999999999D", 1e20])
def test_a_duration_too_long_to_represent_is_a_value_error(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00+00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T07:00:00-05:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.250Z", datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (1_714_564_800, datetime(2024, 5, 1, 12, tzinfo=UTC)),
        (1_714_564_800.5, datetime(2024, 5, 1, 12, 0, 0, 500_000, tzinfo=UTC)),
    ],
)
def test_timestamps(value: Any, expected: datetime) -> None:
    parsed = parse_timestamp(value)
    assert parsed is not None
    assert parsed.tzinfo is not None
    assert parsed == expected


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        "2024-13-01T00:00:00Z",
        "tomorrow",
        True,
        False,
        None,
        1e30,
        float("nan"),
        ["2024-05-01"],
        {"at": "2024-05-01"},
    ],
)
def test_what_is_not_a_timestamp_is_none(value: Any) -> None:
    assert parse_timestamp(value) is None
