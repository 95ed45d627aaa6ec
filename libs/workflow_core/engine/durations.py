"""ISO 8601 durations (`PT10M`, `P1DT2H`, `PT0.5S`) and plain seconds, as used by `wait` steps,
human-task deadlines and retry policies."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_ISO = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


MAX_DURATION = timedelta(days=366 * 100)
"""Longer waits are refused: they are mistakes, and they overflow date arithmetic."""


def parse_duration(value: object) -> timedelta:
    """A duration from an ISO 8601 string or a number of seconds; ValueError otherwise.
    Years and months are refused: their length depends on the calendar."""
    duration = _duration(value)
    if duration > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than the longest duration allowed (100 years)")
    return duration


def _duration(value: object) -> timedelta:
    if isinstance(value, bool):
        raise ValueError("a duration must be an ISO 8601 string like PT10M or a number of seconds")
    try:
        if isinstance(value, int | float):
            if value < 0:
                raise ValueError("a duration cannot be negative")
            return timedelta(seconds=value)
        if isinstance(value, str):
            match = _ISO.match(value.strip().upper())
            if match:
                parts = {name: float(n) for name, n in match.groupdict().items() if n}
                return timedelta(**parts)
    except OverflowError:
        raise ValueError(
            f"{value!r} is longer than the longest duration allowed (100 years)"
        ) from None
    raise ValueError(
        f"{value!r} is not a duration: use ISO 8601 like PT10M, P1D, PT1H30M, or seconds"
    )


def parse_timestamp(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 string or epoch seconds, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            # 9999-12-31T23:59:59-14:00 is a valid string whose UTC time has no datetime.
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            return None
    return None
