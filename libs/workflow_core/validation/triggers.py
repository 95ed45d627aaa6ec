"""Checks of what starts a workflow's runs and how often: a schedule's cron and timezone,
the throttle's window, and a trigger type no event can have (a warning)."""

from __future__ import annotations

from collections.abc import Iterator

from workflow_core.definitions.models import (
    WorkflowDefinition,
)
from workflow_core.engine.durations import parse_duration
from workflow_core.engine.schedule import SCHEDULE, cron_problem, timezone_problem
from workflow_core.events import FORM_SUBMITTED, event_type_problem
from workflow_core.validation.problems import Problem


def check_schedule(definition: WorkflowDefinition) -> Iterator[Problem]:
    trigger = definition.trigger
    if trigger.type != SCHEDULE:
        if trigger.cron is not None:
            yield Problem(
                ("trigger", "cron"),
                f"`cron` belongs to a {SCHEDULE!r} trigger, not to {trigger.type!r}",
                "schedule",
            )
        return
    if trigger.cron is None:
        yield Problem(("trigger", "cron"), "a schedule trigger needs `cron`", "missing")
    elif problem := cron_problem(trigger.cron):
        yield Problem(("trigger", "cron"), problem, "cron")
    if problem := timezone_problem(trigger.timezone):
        yield Problem(("trigger", "timezone"), problem, "timezone")


def check_throttle(definition: WorkflowDefinition) -> Iterator[Problem]:
    throttle = definition.throttle
    if throttle is None:
        return
    try:
        per = parse_duration(throttle.per)
    except ValueError as error:
        yield Problem(("throttle", "per"), str(error), "duration")
        return
    if per.total_seconds() <= 0:
        yield Problem(
            ("throttle", "per"), "the throttle's window must be longer than 0", "duration"
        )


def unknown_trigger_type(definition: WorkflowDefinition) -> Iterator[Problem]:
    """A trigger type no event can have (a typo, most often) saves fine and never starts a
    run: forms send `form_submitted`, schedules `schedule`, POST /events any well-formed type
    name."""
    name = definition.trigger.type
    problem = None if name in (FORM_SUBMITTED, SCHEDULE) else event_type_problem(name)
    if problem:
        yield Problem(
            ("trigger", "type"),
            f"no event has type {name!r} ({problem}), so this workflow will never run",
            "trigger_type",
        )
