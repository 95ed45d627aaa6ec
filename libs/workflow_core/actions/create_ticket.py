"""create_ticket: a ticket in Flowline's database, once per run step.

Its id is derived from the action's idempotency key, so a retried or redelivered attempt finds
the ticket the first one made instead of opening a second. Later steps reach it through
`steps.<step_id>.ticket_id`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workflow_core.actions.base import ActionCall, ActionDeps
from workflow_core.actions.registry import ActionType, register
from workflow_core.engine.limits import DEFAULT_LIMITS, DEFAULT_RENDERED_BYTES, Limits
from workflow_core.engine.templates import render, render_header, render_value
from workflow_core.ids import DRY_RUN_ID, derived_id
from workflow_core.statuses import TicketPriority, TicketStatus

"""The id a preview shows in place of the one the ticket would get."""


class CreateTicketConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(min_length=1, max_length=2000)
    description: str | None = None
    status: TicketStatus = TicketStatus.OPEN
    priority: TicketPriority = TicketPriority.NORMAL
    assignee: str | None = Field(default=None, max_length=500)
    fields: dict[str, Any] = Field(default_factory=dict)


def one_line(
    template: str | None, context: Mapping[str, Any], limit: int = DEFAULT_RENDERED_BYTES
) -> str | None:
    """A rendered single-line value (subject, title, assignee); None when it renders empty."""
    if template is None:
        return None
    return render_header(template, context, limit=limit) or None


def ticket_values(
    config: CreateTicketConfig, context: Mapping[str, Any], limit: int
) -> dict[str, Any]:
    """The ticket this config describes in `context`, its templates rendered."""
    return {
        "subject": one_line(config.subject, context, limit) or "",
        "description": (
            render(config.description, context, limit=limit) if config.description else None
        ),
        "status": config.status,
        "priority": config.priority,
        "assignee": one_line(config.assignee, context, limit),
        "fields": render_value(config.fields, context, limit=limit),
    }


def preview(
    config: CreateTicketConfig, context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """The ticket this action would open in `context`."""
    return {
        "ticket_id": DRY_RUN_ID,
        "ticket": ticket_values(config, context, limits.rendered_bytes),
    }


async def execute(call: ActionCall, config: CreateTicketConfig, deps: ActionDeps) -> dict[str, Any]:
    ticket_id = derived_id(call.key)
    values = ticket_values(config, call.context, call.limits.rendered_bytes)
    ticket = await deps.records.create_ticket(ticket_id, call, values)
    return {"ticket_id": str(ticket_id), "ticket": ticket}


register(ActionType("create_ticket", CreateTicketConfig, execute, preview))
