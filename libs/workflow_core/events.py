"""The events that travel through the outbox and the stream, and how they are encoded.

`form_submitted` starts the runs whose trigger matches; `run.resume` wakes one run (a task was
completed, a timer fired). On the stream an entry has the fields `type`, `event_id` and
`payload` (JSON of the whole event), and `traceparent` when the event continues a trace."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

FORM_SUBMITTED = "form_submitted"
RUN_RESUME = "run.resume"
EVENT_TYPES = frozenset({FORM_SUBMITTED, RUN_RESUME})
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
    required = (
        ("submission_id", "template_id", "org_id", "data")
        if event_type == FORM_SUBMITTED
        else ("run_id", "cause")
    )
    missing = [name for name in required if name not in payload]
    if missing:
        raise MalformedEvent(f"{event_type} event lacks {', '.join(missing)}")
    return Event(event_id, event_type, payload)
