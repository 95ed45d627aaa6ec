"""What a dry run starts from (walk.py): the sample form or event, or a schedule's next
tick, and whether the workflow's trigger takes it, with the reason when it does not."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from workflow_core import events
from workflow_core.definitions import WorkflowDefinition
from workflow_core.engine.conditions import evaluate
from workflow_core.engine.schedule import SCHEDULE, upcoming
from workflow_core.ids import DRY_RUN_ID


def trigger_verdict(
    definition: WorkflowDefinition, workflow_org_id: str | None, event: Mapping[str, Any]
) -> tuple[bool, str]:
    """Whether the workflow starts for `event`, and why (or why not)."""
    sample = "form" if event.get("event_type") == events.FORM_SUBMITTED else "event"
    if definition.trigger.type != event.get("event_type"):
        return False, (
            f"trigger.type is {definition.trigger.type!r}; "
            + (
                f"a submission is {events.FORM_SUBMITTED!r}"
                if sample == "form"
                else f"this event is {event.get('event_type')!r}"
            )
        )
    if workflow_org_id is not None and workflow_org_id != event.get("org_id"):
        return False, (
            f"the workflow belongs to organisation {workflow_org_id!r}; the {sample} "
            f"comes from {event.get('org_id')!r}"
        )
    if not evaluate(definition.trigger.conditions, event):
        return False, f"trigger.conditions do not hold for this {sample}"
    return True, "the trigger matches"


def schedule_preview(definition: WorkflowDefinition, now: datetime) -> dict[str, Any]:
    """For a schedule trigger, `next_fire_times`: its next three ticks (UTC); else nothing."""
    trigger = definition.trigger
    if trigger.type != SCHEDULE or trigger.cron is None:
        return {}
    ticks = upcoming(trigger.cron, trigger.timezone, now, 3)
    return {"next_fire_times": [tick.isoformat() for tick in ticks]}


def sample_event(
    definition: WorkflowDefinition,
    form: Mapping[str, Any] | None,
    posted: Mapping[str, Any] | None,
    workflow_org_id: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The event the dry run starts from: the sample form or posted event (`type`, `data`,
    `org_id`, as POST /events takes it), or for a schedule trigger its next tick (the sample's
    data is not used: a scheduled run's `data` says when it was due)."""
    trigger = definition.trigger
    if trigger.type == SCHEDULE and trigger.cron is not None:
        tick = upcoming(trigger.cron, trigger.timezone, now, 1)[0]
        tick_event = events.schedule_tick(
            UUID(int=0), workflow_org_id, tick, cron=trigger.cron, timezone=trigger.timezone,
            missed=0,
        )  # fmt: skip
        return tick_event.payload
    if posted is not None:
        return events.posted(
            UUID(int=0), posted["type"], posted.get("org_id") or "", posted["data"], now
        ).payload
    return {
        **(form or {}),
        "event_type": events.FORM_SUBMITTED,
        "submission_id": DRY_RUN_ID,
        "submitted_at": now.isoformat(),
    }
