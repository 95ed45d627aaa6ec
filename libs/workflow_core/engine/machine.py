"""The step machine: given a definition and where a run stands, decide what happens next.

Pure: every function takes what it needs (the context, the time) and returns a decision; the
worker carries decisions out (runs actions, opens tasks, sets timers, records the run).

A run enters a step (`RunStep`), the worker runs the step's actions, then `after_actions`
says what follows: a human task to open (`OpenTask`), a timer to wait for (`Sleep`), the next
step, an event to wait for (`AwaitEvent`), or the end (`Complete`). A run that waited (its task
settled, its time came, its event came or did not) goes on through `next_step`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from workflow_core.definitions.models import (
    HumanTaskConfig,
    StepSpec,
    WaitConfig,
    WaitForEventConfig,
    WorkflowDefinition,
)
from workflow_core.engine.conditions import evaluate
from workflow_core.engine.durations import MAX_DURATION, parse_duration, parse_timestamp
from workflow_core.engine.limits import DEFAULT_RENDERED_BYTES
from workflow_core.engine.paths import MISSING, resolve
from workflow_core.engine.schedule import SCHEDULE
from workflow_core.engine.templates import render, render_header, to_text


@dataclass(frozen=True, slots=True)
class RunStep:
    """Enter `step` as visit number `seq` of the run and run its actions."""

    step: StepSpec
    seq: int


SHOWN_CHARACTERS = 2000
"""Of each form field shown to a task's assignee."""


@dataclass(frozen=True, slots=True)
class OpenTask:
    """Open a human task for the step and wait for it to be completed."""

    step: StepSpec
    seq: int
    title: str
    description: str | None
    assignee: str | None
    assignee_email: str | None
    due_in: timedelta | None
    """Counted from when the task is stored (by the database's clock)."""
    outcomes: tuple[str, ...] = ()
    """The answers the assignee may give; empty: any."""
    shown: tuple[tuple[str, str], ...] = ()
    """The form fields the assignee sees: (name, value as text), read when the task opens."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait, then go on with `next_step`: until a moment (`datetime`, from the run's data), or
    for a while (`timedelta`, counted from when the timer is stored, by the database's clock)."""

    step: StepSpec
    seq: int
    until: datetime | timedelta


@dataclass(frozen=True, slots=True)
class AwaitEvent:
    """Wait for an event of `event_type` in the run's organisation, received since `since` (the
    run's own event was received), whose value at `path` equals `expected` (no path: any);
    for `timeout` at most (counted from when the wait is stored), else for ever."""

    step: StepSpec
    seq: int
    event_type: str
    path: str | None
    expected: str | None
    since: datetime | None
    timeout: timedelta | None


@dataclass(frozen=True, slots=True)
class Complete:
    """No transition holds: the run is done."""


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str


Decision = RunStep | OpenTask | Sleep | AwaitEvent | Complete | Fail


def start(definition: WorkflowDefinition) -> Decision:
    return RunStep(definition.step(definition.initial_step_id), 1)


def matches_trigger(
    definition: WorkflowDefinition,
    workflow_org_id: str | None,
    event: Mapping[str, Any],
    workflow_id: object = None,
) -> bool:
    """A workflow starts for an event when the trigger type equals the event's type, the
    workflow belongs to the event's organisation (or to none), and the conditions hold. An
    schedule's tick starts only the workflow it names."""
    if definition.trigger.type != event.get("event_type"):
        return False
    if event.get("event_type") == SCHEDULE and event.get("workflow_id") != str(workflow_id):
        return False
    if workflow_org_id is not None and workflow_org_id != event.get("org_id"):
        return False
    return evaluate(definition.trigger.conditions, event)


def after_actions(
    definition: WorkflowDefinition,
    step: StepSpec,
    seq: int,
    context: Mapping[str, Any],
    now: datetime,
    step_budget: int,
    *,
    rendered_bytes: int = DEFAULT_RENDERED_BYTES,
    last_seq: int | None = None,
) -> Decision:
    """What follows once the actions of `step` have all succeeded. A human task's texts are
    rendered here: one larger than `rendered_bytes` raises `TooLarge`. `last_seq`: see
    `next_step`."""
    if step.type == "human_task":
        return _open_task(step, seq, context, rendered_bytes)
    if step.type == "wait_for_event":
        return await_event(step, seq, context, rendered_bytes)
    if step.type == "wait":
        until = wake_time(step, context, now)
        if isinstance(until, Fail):
            return until
        if until > now if isinstance(until, datetime) else until > timedelta(0):
            return Sleep(step, seq, until)
    return next_step(definition, step, seq, context, step_budget, last_seq=last_seq)


def next_step(
    definition: WorkflowDefinition,
    step: StepSpec,
    seq: int,
    context: Mapping[str, Any],
    step_budget: int,
    *,
    last_seq: int | None = None,
) -> Decision:
    """The first transition whose condition holds, in order; none -> the run completes (or,
    in a branch of a parallel step, the branch). The next visit is numbered after `last_seq`,
    the last number the run gave (branches share the count), which defaults to `seq`."""
    last = seq if last_seq is None else last_seq
    for transition in step.transitions:
        if evaluate(transition.conditions, context):
            if last >= step_budget:
                return Fail(
                    f"step budget exhausted: the run entered {last} steps (limit "
                    f"{step_budget}); is there a loop without an exit?"
                )
            return RunStep(definition.step(transition.to), last + 1)
    return Complete()


def wake_time(
    step: StepSpec, context: Mapping[str, Any], now: datetime
) -> datetime | timedelta | Fail:
    """How long a wait step waits: a duration, or a moment read from the context."""
    config = WaitConfig.model_validate(step.config)
    if config.for_ is not None:
        return parse_duration(config.for_)
    value = resolve(context, config.until_path or "")
    until = None if value is MISSING else parse_timestamp(value)
    if until is None:
        return Fail(
            f"wait step {step.id!r}: {config.until_path} holds no timestamp "
            f"(got {'nothing' if value is MISSING else repr(value)[:200]})"
        )
    if until - now > MAX_DURATION:
        return Fail(
            f"wait step {step.id!r}: {config.until_path} is {until.isoformat()}, more than "
            "100 years away"
        )
    return until


def await_event(
    step: StepSpec, seq: int, context: Mapping[str, Any], limit: int = DEFAULT_RENDERED_BYTES
) -> AwaitEvent:
    """What a wait_for_event step waits for: its `match.equals` rendered with the context.
    The lookback starts when the run's own event was received (`received_at` of a posted
    event, `submitted_at` of a form)."""
    config = WaitForEventConfig.model_validate(step.config)
    match = config.match
    return AwaitEvent(
        step=step,
        seq=seq,
        event_type=config.event,
        path=match.path if match else None,
        expected=match_value(match.equals, context, limit) if match else None,
        since=parse_timestamp(context.get("received_at") or context.get("submitted_at")),
        timeout=parse_duration(config.timeout) if config.timeout is not None else None,
    )


def match_value(equals: str | float | bool, context: Mapping[str, Any], limit: int) -> str:
    """The text an event's value must have: a template rendered with the context; a number or
    a boolean as JSON writes it (`5`, `true`), as the database reads it from the event."""
    if isinstance(equals, str):
        return render(equals, context, limit=limit)
    return orjson.dumps(equals).decode()


def with_event_result(
    context: Mapping[str, Any], step_id: str, event: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The context after a wait_for_event step: `steps.<id>.event` holds the event (type, data,
    ...), or `steps.<id>.timed_out` is true and `event` null."""
    steps = dict(context.get("steps", {}))
    outcome = {"event": dict(event) if event is not None else None, "timed_out": event is None}
    steps[step_id] = {**steps.get(step_id, {}), **outcome}
    return {**context, "steps": steps}


def _open_task(step: StepSpec, seq: int, context: Mapping[str, Any], limit: int) -> OpenTask:
    config = HumanTaskConfig.model_validate(step.config)
    title = render_header(config.title or step.name or step.id, context, limit=limit)
    return OpenTask(
        step=step,
        seq=seq,
        title=title,
        description=(
            render(config.description, context, limit=limit) if config.description else None
        ),
        assignee=render(config.assignee, context, limit=limit) if config.assignee else None,
        assignee_email=(
            render_header(config.assignee_email, context, limit=limit)
            if config.assignee_email
            else None
        ),
        due_in=parse_duration(config.due_in) if config.due_in is not None else None,
        outcomes=tuple(config.outcomes or ()),
        shown=tuple((name, _shown_value(context, name, limit)) for name in config.fields),
    )


def _shown_value(context: Mapping[str, Any], name: str, limit: int) -> str:
    """A form field as the assignee reads it (empty when the form has none), cut short: it is
    shown to a person, not processed."""
    value = resolve(context, f"data.{name}")
    text = "" if value is MISSING else to_text(value)
    return text[: min(limit, SHOWN_CHARACTERS)]


def with_step_results(
    context: Mapping[str, Any], step_id: str, results: list[dict[str, Any]]
) -> dict[str, Any]:
    """The context after a step: `steps.<id>` holds its actions' results, merged (later ones
    win), with the list of each result under `actions`."""
    merged: dict[str, Any] = {}
    for result in results:
        merged.update(result)
    merged["actions"] = results
    return {**context, "steps": {**context.get("steps", {}), step_id: merged}}


def with_task_result(context: Mapping[str, Any], task: Mapping[str, Any]) -> dict[str, Any]:
    """The context after a human task is completed: `task.outcome`, `task.data` and more."""
    return {**context, "task": dict(task)}
