"""The events that travel through the outbox and the stream, and how they are encoded.

`form_submitted` starts the runs whose trigger matches; `schedule` starts one run of the
workflow it names (a tick of its schedule trigger); `run.resume` wakes one run (a task was
completed, a timer fired). On the stream an entry has the fields `type`, `event_id` and
`payload` (JSON of the whole event)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

import orjson

FORM_SUBMITTED = "form_submitted"
SCHEDULE = "schedule"
RUN_RESUME = "run.resume"
EVENT_TYPES = frozenset({FORM_SUBMITTED, SCHEDULE, RUN_RESUME})
STARTING = frozenset({FORM_SUBMITTED, SCHEDULE})
"""The event types that start runs (the others wake one)."""


class MalformedEvent(ValueError):
    """A stream entry that is not a Flowline event: it can never be processed."""


@dataclass(frozen=True, slots=True)
class Event:
    event_id: UUID
    type: str
    payload: dict[str, Any]

    def to_fields(self) -> dict[str, str]:
        return {
            "type": self.type,
            "event_id": str(self.event_id),
            "payload": orjson.dumps(self.payload).decode(),
        }


def form_submitted(
    event_id: UUID,
    submission_id: UUID,
    template_id: str,
    org_id: str,
    data: dict[str, Any],
    submitted_at: datetime,
) -> Event:
    return Event(
        event_id,
        FORM_SUBMITTED,
        {
            "event_id": str(event_id),
            "event_type": FORM_SUBMITTED,
            "submission_id": str(submission_id),
            "template_id": template_id,
            "org_id": org_id,
            "data": data,
            "submitted_at": submitted_at.isoformat(),
        },
    )


def schedule_tick(
    workflow_id: UUID,
    org_id: str | None,
    scheduled_for: datetime,
    *,
    cron: str,
    timezone: str,
    missed: int,
) -> Event:
    """One tick of a workflow's schedule. Its id is derived from the workflow and the tick, so
    a tick queued twice is one event, and starts one run."""
    event_id = uuid5(_SCHEDULE_NAMESPACE, f"{workflow_id}:{scheduled_for.isoformat()}")
    return Event(
        event_id,
        SCHEDULE,
        {
            "event_id": str(event_id),
            "event_type": SCHEDULE,
            "workflow_id": str(workflow_id),
            "org_id": org_id,
            "data": {
                "scheduled_for": scheduled_for.isoformat(),
                "cron": cron,
                "timezone": timezone,
                "missed": missed,
            },
        },
    )


_SCHEDULE_NAMESPACE = UUID("0c9b1f5e-3d0a-4c55-8f4e-51f1b0e0a9d2")


def run_resume(event_id: UUID, run_id: UUID, cause: str, **details: Any) -> Event:
    return Event(
        event_id,
        RUN_RESUME,
        {
            "event_id": str(event_id),
            "event_type": RUN_RESUME,
            "run_id": str(run_id),
            "cause": cause,
            **details,
        },
    )


_REQUIRED = {
    FORM_SUBMITTED: ("submission_id", "template_id", "org_id", "data"),
    SCHEDULE: ("workflow_id", "org_id", "data"),
}


def from_fields(fields: dict[str, str] | None) -> Event:
    """Decode a stream entry; `MalformedEvent` when it is not one of ours."""
    if not fields:
        raise MalformedEvent(
            "the entry has none of an event's fields (type, event_id, payload): "
            "its payload was deleted, or it was never a Flowline event"
        )
    try:
        event_type = fields["type"]
        event_id = UUID(fields["event_id"])
        payload = orjson.loads(fields["payload"])
    except (KeyError, ValueError, TypeError) as error:
        raise MalformedEvent(f"not a Flowline event: {type(error).__name__}: {error}") from None
    if event_type not in EVENT_TYPES:
        raise MalformedEvent(f"unknown event type {event_type!r}")
    if not isinstance(payload, dict):
        raise MalformedEvent("the payload is not a JSON object")
    required = _REQUIRED.get(event_type, ("run_id", "cause"))
    missing = [name for name in required if name not in payload]
    if missing:
        raise MalformedEvent(f"{event_type} event lacks {', '.join(missing)}")
    return Event(event_id, event_type, payload)
