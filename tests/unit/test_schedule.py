"""Next fire times: cron in a time zone, daylight-saving changes, what fires after an outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from tests.unit.factories import definition, definition_dict
from workflow_core import events
from workflow_core.engine.machine import matches_trigger
from workflow_core.engine.schedule import (
    cron_problem,
    due_ticks,
    next_fire,
    timezone_problem,
    upcoming,
)
from workflow_core.validation import validate_definition

BERLIN = "Europe/Berlin"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_weekday_mornings_in_berlin_are_utc_instants_of_local_nine() -> None:
    friday_evening = utc(2026, 11, 27, 18)
    ticks = upcoming("0 9 * * MON-FRI", BERLIN, friday_evening, 3)
    # Winter time (UTC+1): 9:00 in Berlin is 8:00 UTC; the weekend is skipped.
    assert ticks == [utc(2026, 11, 30, 8), utc(2026, 12, 1, 8), utc(2026, 12, 2, 8)]


def test_summer_time_moves_the_utc_instant() -> None:
    assert next_fire("0 9 * * *", BERLIN, utc(2026, 7, 1, 12)) == utc(2026, 7, 2, 7)


def test_next_fire_is_strictly_after() -> None:
    assert next_fire("0 9 * * *", "UTC", utc(2026, 1, 1, 9)) == utc(2026, 1, 2, 9)


def test_a_tick_in_the_skipped_hour_fires_once_after_the_gap() -> None:
    # 2026-03-29: Berlin jumps from 02:00 to 03:00 (UTC+1 -> UTC+2).
    ticks = upcoming("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), 3)
    assert ticks == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]


def test_a_tick_in_the_repeated_hour_fires_once() -> None:
    # 2026-10-25: Berlin goes back from 03:00 to 02:00 (UTC+2 -> UTC+1); 02:30 happens twice.
    ticks = upcoming("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 3)
    assert ticks == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]


def test_from_inside_the_repeated_hour_the_daily_tick_is_not_fired_again() -> None:
    fired_at_first_half_past_two = utc(2026, 10, 25, 0, 30)
    after = next_fire("30 2 * * *", BERLIN, fired_at_first_half_past_two)
    assert after == utc(2026, 10, 26, 1, 30)
    # Asked during the second 02:05, the next tick is never one already past.
    assert next_fire("30 2 * * *", BERLIN, utc(2026, 10, 25, 1, 5)) > utc(2026, 10, 25, 1, 5)


def test_every_half_hour_counts_real_time_through_the_repeated_hour() -> None:
    ticks = upcoming("*/30 * * * *", BERLIN, utc(2026, 10, 24, 23, 50), 5)
    assert ticks == [utc(2026, 10, 25, 0) + timedelta(minutes=30 * n) for n in range(5)]


def test_seconds_field_is_supported() -> None:
    assert upcoming("* * * * * *", "UTC", utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 0, 0, 1),
        utc(2026, 1, 1, 0, 0, 2),
    ]


def test_not_yet_due_fires_nothing() -> None:
    firing = due_ticks(
        "0 * * * *", "UTC", next_fire_at=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 9, 59),
        catch_up=False, limit=10,
    )  # fmt: skip
    assert firing.fire == () and firing.next_fire_at == utc(2026, 1, 1, 10)


def test_on_time_fires_the_tick_and_waits_for_the_next() -> None:
    firing = due_ticks(
        "0 * * * *", "UTC", next_fire_at=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 10, 0, 1),
        catch_up=False, limit=10,
    )  # fmt: skip
    assert firing.fire == (utc(2026, 1, 1, 10),)
    assert firing.next_fire_at == utc(2026, 1, 1, 11) and firing.missed == 0


def test_after_an_outage_without_catch_up_fires_once_for_the_latest_tick() -> None:
    firing = due_ticks(
        "0 * * * *", "UTC", next_fire_at=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 15, 30),
        catch_up=False, limit=10,
    )  # fmt: skip
    assert firing.fire == (utc(2026, 1, 1, 15),)
    assert firing.missed == 5 and firing.next_fire_at == utc(2026, 1, 1, 16)


def test_after_an_outage_with_catch_up_fires_each_tick_up_to_the_limit() -> None:
    firing = due_ticks(
        "0 * * * *", "UTC", next_fire_at=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 15, 30),
        catch_up=True, limit=4,
    )  # fmt: skip
    assert firing.fire == tuple(utc(2026, 1, 1, hour) for hour in (12, 13, 14, 15))
    assert firing.missed == 2 and firing.next_fire_at == utc(2026, 1, 1, 16)


def test_a_very_long_outage_of_an_every_second_schedule_is_bounded() -> None:
    firing = due_ticks(
        "* * * * * *", "UTC", next_fire_at=utc(2026, 1, 1), now=utc(2026, 1, 3, 0, 0, 0),
        catch_up=False, limit=10,
    )  # fmt: skip
    assert firing.fire == (utc(2026, 1, 3),) and firing.next_fire_at == utc(2026, 1, 3, 0, 0, 1)


@pytest.mark.parametrize("expression", ["0 9 * *", "61 * * * *", "0 9 * * FOO", "a b c d e"])
def test_bad_cron_expressions_are_named(expression: str) -> None:
    assert cron_problem(expression)


def test_unknown_time_zone_is_named() -> None:
    for name in ("Europe/Atlantis", "../etc", "Europe", "x" * 5000, "UTC\x00", ""):
        assert timezone_problem(name), name
    assert timezone_problem("Europe/Berlin") is None


def schedule_definition(**trigger: object) -> dict[str, object]:
    return definition_dict(trigger={"type": "schedule", **trigger})


def test_a_schedule_trigger_validates_without_warnings() -> None:
    result = validate_definition(schedule_definition(cron="0 9 * * MON-FRI", timezone=BERLIN))
    assert result.ok and not result.warnings
    assert result.definition is not None and result.definition.trigger.catch_up is False


@pytest.mark.parametrize(
    ("trigger", "path"),
    [
        ({"cron": "0 9 * *"}, "trigger.cron"),
        ({}, "trigger.cron"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "trigger.timezone"),
        ({"cron": "0 9 * * *", "catch_up": "sometimes"}, "trigger.catch_up"),
    ],
)
def test_a_bad_schedule_is_refused_at_its_path(trigger: dict[str, object], path: str) -> None:
    result = validate_definition(schedule_definition(**trigger))
    assert not result.ok and [p.path for p in result.errors] == [path]


def test_cron_on_a_form_trigger_is_refused() -> None:
    result = validate_definition(definition_dict(trigger={"type": "form_submitted", "cron": "*"}))
    assert [p.path for p in result.errors] == ["trigger.cron"]


def test_a_tick_starts_only_the_workflow_it_names() -> None:
    scheduled = definition(trigger={"type": "schedule", "cron": "* * * * *"})
    mine, other = uuid4(), uuid4()
    tick = events.schedule_tick(
        mine, "org_1", utc(2026, 1, 1), cron="* * * * *", timezone="UTC", missed=0
    ).payload
    assert matches_trigger(scheduled, "org_1", tick, mine)
    assert matches_trigger(scheduled, None, tick, mine)
    assert not matches_trigger(scheduled, "org_1", tick, other)
    assert not matches_trigger(definition(), None, tick, mine)  # a form trigger


def test_a_tick_has_one_id_however_often_it_is_made() -> None:
    workflow_id = uuid4()

    def make(at: datetime) -> events.Event:
        return events.schedule_tick(
            workflow_id, None, at, cron="* * * * *", timezone="UTC", missed=0
        )

    assert make(utc(2026, 1, 1)).event_id == make(utc(2026, 1, 1)).event_id
    assert make(utc(2026, 1, 1)).event_id != make(utc(2026, 1, 1, 0, 1)).event_id
    decoded = events.from_fields(make(utc(2026, 1, 1)).to_fields())
    assert decoded.type == events.SCHEDULE and decoded.payload["org_id"] is None
