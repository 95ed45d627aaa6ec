from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pytest

from workflow_core import events
from workflow_core.events import MalformedEvent, from_fields

EVENT_ID = UUID("00000000-0000-4000-8000-00000000000e")
SUBMISSION_ID = UUID("00000000-0000-4000-8000-00000000005b")
RUN_ID = UUID("00000000-0000-4000-8000-0000000000a1")
SUBMITTED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def submitted(**data: Any) -> events.Event:
    return events.form_submitted(
        EVENT_ID,
        SUBMISSION_ID,
        "contact",
        "org_123",
        {"email": "user@example.com", "name": "Zoë", **data},
        SUBMITTED_AT,
    )


def fields(**changes: Any) -> dict[str, Any]:
    """The stream fields of a valid form_submitted event, with `changes` applied (None drops)."""
    result: dict[str, Any] = {**submitted().to_fields(), **changes}
    return {key: value for key, value in result.items() if value is not None}


def payload_without(key: str) -> str:
    payload = submitted().payload
    return orjson.dumps({k: v for k, v in payload.items() if k != key}).decode()


def test_form_submitted_round_trips() -> None:
    event = submitted(nested={"list": [1, 2.5, None, True]})
    assert from_fields(event.to_fields()) == event


def test_form_submitted_carries_what_the_context_needs() -> None:
    payload = from_fields(submitted().to_fields()).payload
    assert payload["event_type"] == "form_submitted"
    assert payload["submission_id"] == str(SUBMISSION_ID)
    assert payload["template_id"] == "contact"
    assert payload["org_id"] == "org_123"
    assert payload["data"]["name"] == "Zoë"
    assert payload["submitted_at"] == "2024-05-01T12:00:00+00:00"


def test_run_resume_round_trips_with_its_details() -> None:
    event = events.run_resume(EVENT_ID, RUN_ID, "task_completed", task_id="t-1", outcome="ok")
    decoded = from_fields(event.to_fields())
    assert decoded == event
    assert decoded.type == "run.resume"
    assert decoded.payload["run_id"] == str(RUN_ID)
    assert decoded.payload["task_id"] == "t-1"


def test_stream_fields_are_strings() -> None:
    encoded = submitted().to_fields()
    assert set(encoded) == {"type", "event_id", "payload"}
    assert all(isinstance(value, str) for value in encoded.values())
    assert encoded["event_id"] == str(EVENT_ID)


@pytest.mark.parametrize(
    "entry",
    [
        None,
        {},
        fields(type=None),
        fields(event_id=None),
        fields(payload=None),
        fields(event_id="not-a-uuid"),
        fields(payload="{not json"),
        fields(payload=""),
        fields(type="form_deleted"),
        fields(type=""),
        fields(payload="[1, 2]"),
        fields(payload='"text"'),
        fields(payload="null"),
        fields(payload=payload_without("submission_id")),
        fields(payload=payload_without("data")),
        fields(payload=payload_without("org_id")),
        fields(payload=payload_without("template_id")),
        {**events.run_resume(EVENT_ID, RUN_ID, "timer").to_fields(), "payload": "{}"},
    ],
)
def test_what_is_not_a_flowline_event_is_malformed(entry: Any) -> None:
    with pytest.raises(MalformedEvent):
        from_fields(entry)


def test_a_malformed_event_names_the_missing_payload_keys() -> None:
    with pytest.raises(MalformedEvent, match="run_id"):
        from_fields({**events.run_resume(EVENT_ID, RUN_ID, "timer").to_fields(), "payload": "{}"})


def test_a_malformed_event_is_a_value_error() -> None:
    assert issubclass(MalformedEvent, ValueError)
