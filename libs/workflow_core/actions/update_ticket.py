"""update_ticket: change a ticket an earlier step (or another run) opened.

The ticket is named by `ticket_id`, a template such as `{steps.open.ticket_id}`, or by
`ticket_id_path`, a dotted path into the context such as `steps.open.ticket_id`. `fields` are
merged into the ticket's fields (top-level keys added or replaced), never replace them.
Repeating an update sets the same values again, so a retried attempt is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workflow_core.actions.base import ActionCall, ActionDeps
from workflow_core.actions.create_ticket import one_line
from workflow_core.actions.registry import ActionType, register
from workflow_core.engine.limits import DEFAULT_LIMITS, DEFAULT_RENDERED_BYTES, Limits
from workflow_core.engine.paths import MISSING, resolve
from workflow_core.engine.templates import render, render_value, to_text
from workflow_core.errors import PermanentActionError
from workflow_core.ids import parse_uuid
from workflow_core.statuses import TicketPriority, TicketStatus


def exactly_one_target(kind: str, literal: str | None, path: str | None) -> None:
    """A config's check that it names its record one way: `<kind>_id` or `<kind>_id_path`."""
    if (literal is None) == (path is None):
        raise ValueError(
            f"update_{kind} needs exactly one of `{kind}_id` (a template such as "
            f"{{steps.<step>.{kind}_id}}) or `{kind}_id_path` (a path such as "
            f"steps.<step>.{kind}_id)"
        )


def needs_a_change(kind: str, config: BaseModel, names: tuple[str, ...]) -> None:
    if all(getattr(config, name) is None for name in names):
        raise ValueError(f"update_{kind} changes nothing: give at least one of {', '.join(names)}")


def target_text(
    literal: str | None,
    path: str | None,
    context: Mapping[str, Any],
    limit: int = DEFAULT_RENDERED_BYTES,
) -> str | None:
    """The id a config names in `context`, as text; None when its path leads nowhere."""
    if literal is not None:
        return render(literal, context, limit=limit).strip()
    value = resolve(context, path or "")
    return None if value is MISSING or value is None else to_text(value).strip()


def target_id(
    kind: str,
    literal: str | None,
    path: str | None,
    context: Mapping[str, Any],
    limit: int = DEFAULT_RENDERED_BYTES,
) -> UUID:
    """The id of the record to change; PermanentActionError when the context gives none."""
    text = target_text(literal, path, context, limit)
    if text is None:
        raise PermanentActionError(
            f"`{kind}_id_path` {path!r} leads to nothing in the run's context: no {kind} to update"
        )
    found = parse_uuid(text)
    if found is None:
        named = f"`{kind}_id` {literal!r}" if literal is not None else f"`{kind}_id_path` {path!r}"
        raise PermanentActionError(f"{named} gave {text!r}, which is not a {kind} id (a UUID)")
    return found


_CHANGES = ("status", "priority", "assignee", "subject", "description", "fields")


class UpdateTicketConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ticket_id: str | None = Field(default=None, min_length=1)
    ticket_id_path: str | None = Field(default=None, min_length=1)
    status: TicketStatus | None = None
    priority: TicketPriority | None = None
    assignee: str | None = Field(default=None, max_length=500)
    subject: str | None = Field(default=None, min_length=1, max_length=2000)
    description: str | None = None
    fields: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> UpdateTicketConfig:
        exactly_one_target("ticket", self.ticket_id, self.ticket_id_path)
        needs_a_change("ticket", self, _CHANGES)
        return self


def changes(config: UpdateTicketConfig, context: Mapping[str, Any], limit: int) -> dict[str, Any]:
    """The columns this config sets in `context`, its templates rendered."""
    found: dict[str, Any] = {}
    if config.status is not None:
        found["status"] = config.status
    if config.priority is not None:
        found["priority"] = config.priority
    if config.assignee is not None:
        found["assignee"] = one_line(config.assignee, context, limit)
    if config.subject is not None:
        found["subject"] = one_line(config.subject, context, limit) or ""
    if config.description is not None:
        found["description"] = render(config.description, context, limit=limit)
    if config.fields is not None:
        found["fields"] = render_value(config.fields, context, limit=limit)
    return found


def preview(
    config: UpdateTicketConfig, context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """The ticket this action would change in `context`, and how."""
    limit = limits.rendered_bytes
    return {
        "ticket_id": target_text(config.ticket_id, config.ticket_id_path, context, limit),
        "changes": changes(config, context, limit),
    }


async def execute(call: ActionCall, config: UpdateTicketConfig, deps: ActionDeps) -> dict[str, Any]:
    limit = call.limits.rendered_bytes
    ticket_id = target_id("ticket", config.ticket_id, config.ticket_id_path, call.context, limit)
    values = changes(config, call.context, limit)
    ticket = await deps.records.update_ticket(ticket_id, call.org_id, values)
    return {"ticket_id": str(ticket_id), "ticket": ticket}


register(ActionType("update_ticket", UpdateTicketConfig, execute, preview))
