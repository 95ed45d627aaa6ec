"""Request and response bodies of the tickets and tasks endpoints (kept apart from the tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.api.schemas import Document, check_document

ShortText = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(check_document)]


class TicketOut(BaseModel):
    id: UUID
    run_id: UUID | None
    workflow_id: UUID | None
    submission_id: UUID | None
    org_id: str | None
    subject: str
    description: str | None
    status: str
    priority: str
    assignee: str | None
    fields: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class TaskOut(BaseModel):
    id: UUID
    kind: str
    run_id: UUID | None
    workflow_id: UUID | None
    step_id: str | None
    step_seq: int | None
    submission_id: UUID | None
    org_id: str | None
    title: str
    description: str | None
    assignee: str | None
    status: str
    outcome: str | None
    data: dict[str, Any] | None
    fields: dict[str, Any] | None
    due_at: datetime | None
    completed_at: datetime | None
    completed_by: str | None
    created_at: datetime
    updated_at: datetime


class TaskCompletion(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "outcome": "approved",
                    "data": {"comment": "Looks good"},
                    "completed_by": "reviewer@example.com",
                }
            ]
        }
    )

    outcome: ShortText | None = None
    data: Document | None = None
    completed_by: ShortText | None = None
