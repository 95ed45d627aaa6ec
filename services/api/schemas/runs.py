"""Bodies of the run routes: a run's summary and its full history (steps, attempts),
cancelling a run, and retrying failed runs in bulk."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from services.api.schemas.documents import (
    Text,
    with_examples,
)
from workflow_core.statuses import (
    AttemptStatus,
    RunStatus,
    StepStatus,
)


class RunSummary(BaseModel):
    id: UUID
    run_id: UUID
    workflow_id: UUID
    workflow_version: int
    status: RunStatus
    current_step_id: str | None
    waiting_for: Literal["concurrency", "throttle"] | None = Field(
        default=None,
        description="a `waiting` run that has not started yet: what it waits for (its "
        "workflow's concurrency limit or throttle); null otherwise",
    )
    error: str | None
    created_at: datetime | None
    updated_at: datetime | None


class RunCancel(BaseModel):
    model_config = with_examples({"reason": "sent to the wrong team"})

    reason: Text | None = Field(default=None, description="recorded as the run's error")


class RunCancelled(BaseModel):
    run_id: UUID
    status: RunStatus
    error: str = Field(description="`cancelled`, with the reason when one was given")
    tasks_cancelled: int = Field(description="its pending human tasks, now `cancelled`")
    timers_deleted: int = Field(description="its waits, deadlines and retries still due")


RETRY_LIMIT_MAX = 1000


class RunRetryFilter(BaseModel):
    """Which failed runs to restart: every field given must match."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "workflow_id": "0b566ef7-5d5a-4c5e-9a43-3c4a4f7d2b10",
                    "since": "2026-11-30T14:00:00Z",
                    "until": "2026-11-30T15:00:00Z",
                    "error_contains": "timed out",
                    "limit": 100,
                }
            ]
        },
    )

    workflow_id: UUID | None = None
    org_id: Text | None = Field(
        default=None, description="an organisation's key retries its own runs only"
    )
    since: AwareDatetime | None = Field(default=None, description="failed at or after")
    until: AwareDatetime | None = Field(default=None, description="failed before")
    error_contains: Text | None = Field(default=None, description="in the run's error")
    limit: int = Field(default=100, ge=1, le=RETRY_LIMIT_MAX, description="at most this many")

    @model_validator(mode="after")
    def _a_window(self) -> RunRetryFilter:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("`since` must be earlier than `until`")
        return self


class RunRetryReport(BaseModel):
    matched: int = Field(description="failed runs matching the filter")
    retried: int = Field(description="restarted now (at most `limit`)")
    run_ids: list[UUID]
    truncated: bool = Field(description="more matched than were retried: send it again")


class ActionAttempt(BaseModel):
    action_index: int
    action_type: str
    attempt: int
    delivery: int | None = Field(default=None, description="which delivery of the event")
    status: AttemptStatus
    started_at: datetime
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: str | None


class StepVisit(BaseModel):
    seq: int
    step_id: str
    step_type: str
    status: StepStatus
    entered_at: datetime
    finished_at: datetime | None
    transition_to: str | None
    error: str | None
    actions: list[ActionAttempt]


class HistoryEntry(BaseModel):
    at: datetime
    kind: str
    step_id: str
    seq: int
    status: str
    action_index: int | None = None
    action_type: str | None = None
    attempt: int | None = None
    delivery: int | None = None
    finished_at: datetime | None = None
    error: str | None = None


class RunOut(RunSummary):
    submission_id: UUID | None
    event_id: UUID
    step_seq: int
    deliveries: int
    finished_at: datetime | None
    context: dict[str, Any]
    steps: list[StepVisit]
    history: list[HistoryEntry]
