"""Bodies of the human side: tickets, tasks, completing a task through the API, and the
plain HTML form a task's page posts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

from services.api.schemas.documents import (
    Document,
    check_document,
)
from workflow_core.statuses import (
    TaskKind,
    TaskStatus,
    TicketPriority,
    TicketStatus,
)

ShortText = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(check_document)]


class TicketOut(BaseModel):
    id: UUID
    run_id: UUID | None
    workflow_id: UUID | None
    submission_id: UUID | None
    org_id: str | None
    subject: str
    description: str | None
    status: TicketStatus
    priority: TicketPriority
    assignee: str | None
    fields: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class TaskOut(BaseModel):
    id: UUID
    kind: TaskKind
    run_id: UUID | None
    workflow_id: UUID | None
    step_id: str | None
    step_seq: int | None
    submission_id: UUID | None
    org_id: str | None
    title: str
    description: str | None
    assignee: str | None
    status: TaskStatus
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


COMMENT_LIMIT = 2000


class TaskDecision(BaseModel):
    """What the button of a task's page (`/t/{token}`) posts, as a plain HTML form."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"outcome": "approved", "comment": "Go ahead."}]}
    )

    outcome: str | None = Field(
        default=None,
        max_length=40,
        description="needed on the task's page; an outcome's link has its own",
    )
    comment: str | None = Field(
        default=None, max_length=COMMENT_LIMIT, description="lands in `task.data.comment`"
    )
