"""Bodies of what comes in: a form's submission and an event, and a submission as read back.

Kept together because both are intake: they become events on the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
)

from services.api.schemas.documents import (
    Document,
    Text,
    with_examples,
)
from services.api.schemas.runs import RunSummary
from workflow_core.events import MAX_EVENT_TYPE_LENGTH, event_type_problem

EXAMPLE_FORM: dict[str, Any] = {
    "template_id": "form_submitted",
    "data": {"email": "user@example.com", "name": "John Doe", "message": "Hello world"},
    "org_id": "org_123",
}


class SubmitRequest(BaseModel):
    model_config = with_examples(EXAMPLE_FORM)

    template_id: Text
    data: Document
    org_id: Text | None = Field(
        default=None,
        description="the organisation; with an organisation's key it may be left out (the "
        "key's is used), and another one is refused (403)",
    )


class SubmitAccepted(BaseModel):
    submission_id: UUID
    event_id: UUID
    status: str = "accepted"


def _event_type(name: str) -> str:
    problem = event_type_problem(name)
    if problem:
        raise ValueError(problem)
    return name


EXAMPLE_EVENT: dict[str, Any] = {
    "type": "email.confirmed",
    "data": {"submission_id": "0b9f3a52-8d0c-4a8e-9a51-4a1f0d2b7c11", "email": "a@example.com"},
    "org_id": "org_123",
    "id": "confirm-0b9f3a52",
}


class EventPost(BaseModel):
    model_config = with_examples(EXAMPLE_EVENT)

    type: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_EVENT_TYPE_LENGTH,
            description="lower-case letters, digits, `_`, `-`, in dot-separated parts "
            "(`order.paid`); `form_submitted` and `run.resume` are Flowline's own",
        ),
        AfterValidator(_event_type),
    ]
    data: Document
    org_id: Text | None = Field(
        default=None,
        description="the organisation; with an organisation's key it may be left out (the "
        "key's is used), and another one is refused (403)",
    )
    id: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            max_length=255,
            pattern="^[ -~]+$",
            description="the client's id of the event: a repeat within the organisation (while "
            "the event is kept, EVENT_RETENTION_SECONDS) stores nothing and gets the first answer",
        ),
    ] = None


class EventAccepted(BaseModel):
    event_id: UUID
    status: str = "accepted"


class SubmissionOut(BaseModel):
    id: UUID
    submission_id: UUID
    template_id: str
    org_id: str
    data: dict[str, Any]
    created_at: datetime
    event_id: UUID | None
    published_at: datetime | None
    runs: list[RunSummary]
