"""create_task: a to-do item in the tasks table, once per run step. It does not pause the run
(a `human_task` step does that); people settle it from their own tools, or `update_task` does.

Its id is derived from the action's idempotency key, so a retried or redelivered attempt finds
the task the first one made. Later steps reach it through `steps.<step_id>.task_id`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from workflow_core.actions.base import ActionCall, ActionDeps
from workflow_core.actions.create_ticket import one_line
from workflow_core.actions.registry import ActionType, register
from workflow_core.engine.durations import parse_duration
from workflow_core.engine.limits import DEFAULT_LIMITS, Limits
from workflow_core.engine.templates import render, render_value
from workflow_core.ids import DRY_RUN_ID, derived_id
from workflow_core.statuses import TaskStatus

Duration = str | StrictFloat | StrictInt


def checked_duration(value: Duration | None) -> Duration | None:
    """A config's check of `due_in`: an ISO 8601 duration (PT4H, P2D) or seconds."""
    if value is not None:
        parse_duration(value)
    return value


def due_in(value: Duration | None) -> timedelta | None:
    return parse_duration(value) if value is not None else None


class CreateTaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1, max_length=2000)
    description: str | None = None
    assignee: str | None = Field(default=None, max_length=500)
    due_in: Duration | None = None
    fields: dict[str, Any] = Field(default_factory=dict)

    _due_in = field_validator("due_in")(checked_duration)


def task_values(config: CreateTaskConfig, context: Mapping[str, Any], limit: int) -> dict[str, Any]:
    """The task this config describes in `context` (without its deadline, which needs a
    clock), its templates rendered."""
    return {
        "title": one_line(config.title, context, limit) or "",
        "description": (
            render(config.description, context, limit=limit) if config.description else None
        ),
        "assignee": one_line(config.assignee, context, limit),
        "fields": render_value(config.fields, context, limit=limit),
    }


def preview(
    config: CreateTaskConfig, context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """The task this action would open in `context`; its deadline is `due_in` from then."""
    return {
        "task_id": DRY_RUN_ID,
        "task": {
            **task_values(config, context, limits.rendered_bytes),
            "status": TaskStatus.PENDING,
            "due_in": config.due_in,
        },
    }


async def execute(call: ActionCall, config: CreateTaskConfig, deps: ActionDeps) -> dict[str, Any]:
    task_id = derived_id(call.key)
    values = task_values(config, call.context, call.limits.rendered_bytes)
    delay = due_in(config.due_in)
    if delay is not None:
        values["due_at"] = deps.now() + delay
    task = await deps.records.create_task(task_id, call, values)
    return {"task_id": str(task_id), "task": task}


register(ActionType("create_task", CreateTaskConfig, execute, preview))
