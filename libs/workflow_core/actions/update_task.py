"""update_task: change a to-do item an earlier step (or another run) made: complete or cancel
it, reassign it, move its deadline, add fields.

The task is named by `task_id`, a template such as `{steps.todo.task_id}`, or by
`task_id_path`, a dotted path such as `steps.todo.task_id`. `fields` are merged into the
task's fields. A human task (the kind a `human_task` step opens) is refused: only its
completion through the API settles it, since that is what wakes its run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workflow_core.actions.base import ActionCall, ActionDeps
from workflow_core.actions.create_task import Duration, checked_duration, due_in
from workflow_core.actions.create_ticket import one_line
from workflow_core.actions.registry import ActionType, register
from workflow_core.actions.update_ticket import (
    exactly_one_target,
    needs_a_change,
    target_id,
    target_text,
)
from workflow_core.engine.limits import DEFAULT_LIMITS, Limits
from workflow_core.engine.templates import render, render_value
from workflow_core.statuses import TodoStatus

_CHANGES = ("status", "title", "description", "assignee", "due_in", "fields")


class UpdateTaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str | None = Field(default=None, min_length=1)
    task_id_path: str | None = Field(default=None, min_length=1)
    status: TodoStatus | None = None
    title: str | None = Field(default=None, min_length=1, max_length=2000)
    description: str | None = None
    assignee: str | None = Field(default=None, max_length=500)
    due_in: Duration | None = None
    fields: dict[str, Any] | None = None

    _due_in = field_validator("due_in")(checked_duration)

    @model_validator(mode="after")
    def _check(self) -> UpdateTaskConfig:
        exactly_one_target("task", self.task_id, self.task_id_path)
        needs_a_change("task", self, _CHANGES)
        return self


def changes(config: UpdateTaskConfig, context: Mapping[str, Any], limit: int) -> dict[str, Any]:
    """The columns this config sets in `context` (but the deadline, which needs a clock)."""
    found: dict[str, Any] = {}
    if config.status is not None:
        found["status"] = config.status
    if config.title is not None:
        found["title"] = one_line(config.title, context, limit) or ""
    if config.description is not None:
        found["description"] = render(config.description, context, limit=limit)
    if config.assignee is not None:
        found["assignee"] = one_line(config.assignee, context, limit)
    if config.fields is not None:
        found["fields"] = render_value(config.fields, context, limit=limit)
    return found


def preview(
    config: UpdateTaskConfig, context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """The task this action would change in `context`, and how."""
    limit = limits.rendered_bytes
    shown = changes(config, context, limit)
    if config.due_in is not None:
        shown["due_in"] = config.due_in
    target = target_text(config.task_id, config.task_id_path, context, limit)
    return {"task_id": target, "changes": shown}


async def execute(call: ActionCall, config: UpdateTaskConfig, deps: ActionDeps) -> dict[str, Any]:
    limit = call.limits.rendered_bytes
    task_id = target_id("task", config.task_id, config.task_id_path, call.context, limit)
    values = changes(config, call.context, limit)
    delay = due_in(config.due_in)
    if delay is not None:
        values["due_at"] = deps.now() + delay
    task = await deps.records.update_task(task_id, call.org_id, values)
    return {"task_id": str(task_id), "task": task}


register(ActionType("update_task", UpdateTaskConfig, execute, preview))
