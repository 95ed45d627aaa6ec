"""When a schedule trigger fires: cron expressions (cronsim: five fields, or six with seconds
first) read in an IANA time zone, and what to fire after the worker was away for a while.

Daylight-saving changes: a tick inside the hour that is skipped (spring) fires once, at the
first minute after the gap; a tick inside the hour that is repeated (autumn) fires once, in
its first occurrence. An expression that names every minute (`*/30 * * * *`) fires in both
occurrences of the repeated hour: those are distinct instants.

After an outage (the stored next fire time is in the past): without `catch_up`, the missed
ticks fire once, as the latest of them (`missed` counts the ones that did not fire); with
`catch_up`, each missed tick fires, the latest `limit` of them at most."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from workflow_core.events import SCHEDULE

__all__ = ["SCHEDULE", "Firing", "cron_problem", "due_ticks", "next_fire", "timezone_problem"]

_WALK_LIMIT = 100_000
"""Ticks walked at most to catch up with now (an every-second schedule after a day away);
past that the latest missed tick is found walking back from now."""


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a cron expression this service runs, or None."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        return (
            f"a cron expression has 5 fields (minute hour day month weekday) or 6 (seconds "
            f"first); {expression!r} has {len(fields)}"
        )
    try:
        next(CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC)))
    except CronSimError as error:
        return f"invalid cron expression {expression!r}: {error}"
    return None


def timezone_problem(name: str) -> str | None:
    """Why `name` is not an IANA time zone (such as Europe/Berlin or UTC), or None."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder, a name too long
        return f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC"
    return None


def _ticks_after(expression: str, timezone: str, after: datetime) -> CronSim:
    return CronSim(expression, after.astimezone(ZoneInfo(timezone)))


def next_fire(expression: str, timezone: str, after: datetime) -> datetime:
    """The first tick strictly after `after`, in UTC."""
    ticks = _ticks_after(expression, timezone, after)
    while True:
        # cronsim may answer an instant of the repeated hour that is not later in real time.
        tick = next(ticks).astimezone(UTC)
        if tick > after:
            return tick


def upcoming(expression: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` ticks after `after`, in UTC."""
    found: list[datetime] = []
    while len(found) < count:
        after = next_fire(expression, timezone, after if not found else found[-1])
        found.append(after)
    return found


@dataclass(frozen=True, slots=True)
class Firing:
    """What to do with a due schedule: fire these ticks (oldest first), then wait until
    `next_fire_at`. `missed`: due ticks that do not fire."""

    fire: tuple[datetime, ...]
    next_fire_at: datetime
    missed: int


def due_ticks(
    expression: str,
    timezone: str,
    *,
    next_fire_at: datetime,
    now: datetime,
    catch_up: bool,
    limit: int,
) -> Firing:
    """The ticks from `next_fire_at` up to `now` (both included) and the one after."""
    if next_fire_at > now:
        return Firing((), next_fire_at, 0)
    due: deque[datetime] = deque([next_fire_at], maxlen=limit if catch_up else 1)
    seen, tick = 1, next_fire_at
    while seen < _WALK_LIMIT:
        tick = next_fire(expression, timezone, tick)
        if tick > now:
            return Firing(tuple(due), tick, seen - len(due))
        due.append(tick)
        seen += 1
    # Too many to walk: the latest tick is the one before the first after now.
    following = next_fire(expression, timezone, now)
    latest = _latest_not_after(expression, timezone, now)
    return Firing((latest,), following, max(seen, 1))


def _latest_not_after(expression: str, timezone: str, now: datetime) -> datetime:
    back = CronSim(expression, (now + timedelta(seconds=1)).astimezone(ZoneInfo(timezone)), True)
    while True:
        tick = next(back).astimezone(UTC)
        if tick <= now:
            return tick
