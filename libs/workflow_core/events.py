"""The events that travel through the outbox and the stream, and how they are encoded.

`form_submitted` starts the runs whose trigger matches; `schedule` starts one run of the
workflow it names (a tick of its schedule trigger); `event` (POST /events) carries an event of
any type the client names (`order.paid`): it starts the runs whose trigger has that type and
resumes the runs waiting for it (`wait_for_event` steps); `run.resume` wakes one run (a task was
completed, a timer fired, an awaited event came). On the stream an entry has the fields `type`,
`event_id` and `payload` (JSON of the whole event), and `traceparent` when the event continues
a trace."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

import orjson

FORM_SUBMITTED = "form_submitted"
SCHEDULE = "schedule"
RUN_RESUME = "run.resume"
POSTED = "event"
"""The stream kind of an event posted to /events; its own type is the payload's `event_type`."""
EVENT_TYPES = frozenset({FORM_SUBMITTED, SCHEDULE, RUN_RESUME, POSTED})
STARTING = frozenset({FORM_SUBMITTED, SCHEDULE, POSTED})
"""The event types that start runs (the others wake one)."""

EVENT_TYPE_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
"""An event type a client may name: lower-case words, dotted namespaces (`order.paid`)."""
MAX_EVENT_TYPE_LENGTH = 200
RESERVED_EVENT_TYPES = frozenset({FORM_SUBMITTED, SCHEDULE, RUN_RESUME})
"""Types only Flowline sends: `form_submitted` is what /submit sends, with a submission;
`schedule` is a schedule's tick (a posted one would start scheduled workflows)."""


def event_type_problem(name: object) -> str | None:
    """Why `name` cannot be the type of a posted event, or None when it can."""
    if not isinstance(name, str) or not name:
        return "an event type is a non-empty string"
    if len(name) > MAX_EVENT_TYPE_LENGTH:
        return f"an event type has at most {MAX_EVENT_TYPE_LENGTH} characters"
    if not EVENT_TYPE_NAME.fullmatch(name):
        return (
            f"{name[:80]!r} is not an event type: use lower-case letters, digits, `_` and `-`, "
            "in dot-separated parts (`order.paid`)"
        )
    if name in RESERVED_EVENT_TYPES:
        return f"{name!r} is reserved: only Flowline sends it (POST /submit sends form_submitted)"
    return None


TRACEPARENT = "traceparent"
"""The payload's key (and the stream entry's field) of the W3C trace context the event
continues: set only when the API traced the submission (OTEL_ENABLED)."""


class MalformedEvent(ValueError):
    """A stream entry that is not a Flowline event: it can never be processed."""


@dataclass(frozen=True, slots=True)
class Event:
    event_id: UUID
    type: str
    payload: dict[str, Any]

    def to_fields(self) -> dict[str, str]:
        fields = {
            "type": self.type,
            "event_id": str(self.event_id),
            "payload": orjson.dumps(self.payload).decode(),
        }
        # The trace the event continues, readable without decoding the payload.
        if isinstance(traceparent := self.payload.get(TRACEPARENT), str):
            fields[TRACEPARENT] = traceparent
        return fields


def form_submitted(
    event_id: UUID,
    submission_id: UUID,
    template_id: str,
    org_id: str,
    data: dict[str, Any],
    submitted_at: datetime,
    traceparent: str | None = None,
) -> Event:
    payload = {
        "event_id": str(event_id),
        "event_type": FORM_SUBMITTED,
        "submission_id": str(submission_id),
        "template_id": template_id,
        "org_id": org_id,
        "data": data,
        "submitted_at": submitted_at.isoformat(),
    }
    if traceparent is not None:
        payload[TRACEPARENT] = traceparent
    return Event(event_id, FORM_SUBMITTED, payload)


def posted(
    event_id: UUID,
    event_type: str,
    org_id: str,
    data: dict[str, Any],
    received_at: datetime,
    traceparent: str | None = None,
) -> Event:
    """An event posted to /events (its `event_type` checked by `event_type_problem`)."""
    payload = {
        "event_id": str(event_id),
        "event_type": event_type,
        "org_id": org_id,
        "data": data,
        "received_at": received_at.isoformat(),
    }
    if traceparent is not None:
        payload[TRACEPARENT] = traceparent
    return Event(event_id, POSTED, payload)


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
    POSTED: ("event_type", "org_id", "data"),
    SCHEDULE: ("workflow_id", "org_id", "data"),
    RUN_RESUME: ("run_id", "cause"),
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
    required = _REQUIRED[event_type]
    missing = [name for name in required if name not in payload]
    if missing:
        raise MalformedEvent(f"{event_type} event lacks {', '.join(missing)}")
    return Event(event_id, event_type, payload)
