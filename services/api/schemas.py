"""Request and response bodies of the HTTP API (kept apart from the tables)."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from workflow_core.definitions import WorkflowDefinition
from workflow_core.events import MAX_EVENT_TYPE_LENGTH, event_type_problem
from workflow_core.statuses import (
    AttemptStatus,
    RunStatus,
    StepStatus,
    TaskKind,
    TaskStatus,
    TicketPriority,
    TicketStatus,
)

MAX_DEPTH = 64
MAX_INT4 = 2**31 - 1
# Half of a UTF-16 pair with no other half: JSON can spell it (`"\ud800"`), UTF-8 cannot.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def check_document(value: Any, depth: int = 0) -> Any:
    """Refuse what PostgreSQL's JSONB cannot store faithfully: NUL characters, lone UTF-16
    surrogates, NaN/Infinity, and nesting deeper than MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL (\\u0000) characters")
        if _LONE_SURROGATE.search(value):
            raise ValueError("text must not contain unpaired surrogates such as \\ud800")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise ValueError("whole numbers must fit in 64 bits")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_document(key, depth + 1)
            check_document(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_document(item, depth + 1)
    return value


Document = Annotated[dict[str, Any], AfterValidator(check_document)]
Text = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(check_document)]
OptionalText = Text | None


EXAMPLE_FORM: dict[str, Any] = {
    "template_id": "form_submitted",
    "data": {"email": "user@example.com", "name": "John Doe", "message": "Hello world"},
    "org_id": "org_123",
}

# The original design's example workflow: what the docs pages offer to send.
EXAMPLE_DEFINITION: dict[str, Any] = {
    "trigger": {
        "type": "form_submitted",
        "conditions": {"path": "template_id", "op": "==", "value": "form_submitted"},
    },
    "initial_step_id": "step1",
    "steps": [
        {
            "id": "step1",
            "name": "Send Email Notification",
            "type": "auto_action",
            "actions": [
                {
                    "type": "send_email",
                    "config": {
                        "to_path": "data.email",
                        "subject": "Form Submission Confirmation - {template_id}",
                        "body": "Hello,\n\nYour form submission has been received.\n\n"
                        "Submission ID: {submission_id}\nTemplate: {template_id}\n\nThank you!",
                    },
                }
            ],
            "transitions": [],
        }
    ],
}


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class SubmitRequest(BaseModel):
    model_config = _examples(EXAMPLE_FORM)

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
    model_config = _examples(EXAMPLE_EVENT)

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


DefinitionDocument = Annotated[
    dict[str, Any],
    AfterValidator(check_document),
    WithJsonSchema(WorkflowDefinition.model_json_schema(by_alias=True)),
]


WorkflowKey = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="a stable name of the workflow, unique in its organisation: what a "
        "workflow file (`workflows apply`) names it by",
    ),
]


class WorkflowCreate(BaseModel):
    model_config = _examples(
        {"name": "Send Email on Form Submission", "definition": EXAMPLE_DEFINITION}
    )

    name: Text
    definition: DefinitionDocument
    org_id: OptionalText = None
    key: WorkflowKey | None = None


class WorkflowUpdate(BaseModel):
    model_config = _examples({"name": "Confirm each submission", "definition": EXAMPLE_DEFINITION})

    name: OptionalText = None
    definition: DefinitionDocument


class Problem(BaseModel):
    loc: list[str | int]
    path: str
    msg: str
    type: str


class WorkflowOut(BaseModel):
    id: UUID
    key: str | None = Field(
        default=None, description="what names it in a file (`workflows apply`), if set"
    )
    name: str
    org_id: str | None
    all_organisations: bool = Field(
        description="true when it has no org_id: it matches every organisation's forms"
    )
    active: bool
    version: int
    definition: dict[str, Any] = Field(description="as stored, without its secrets")
    secrets: list[str] = Field(
        default_factory=list,
        description="the JSON paths of the secrets set in the definition (never shown)",
    )
    created_at: datetime
    updated_at: datetime
    warnings: list[Problem] = Field(default_factory=list)


class WorkflowVersionOut(BaseModel):
    version: int
    name: str
    created_at: datetime


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
    model_config = _examples({"reason": "sent to the wrong team"})

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


class TaskOutcome(BaseModel):
    """How a human task ends in a dry run."""

    outcome: Annotated[str, AfterValidator(check_document)] | None = None
    data: Document = Field(default_factory=dict)


class DryRunRequest(BaseModel):
    model_config = _examples({"form": EXAMPLE_FORM})

    form: SubmitRequest
    task_outcomes: dict[str, TaskOutcome] = Field(
        default_factory=dict,
        description="per human_task step id, how its task ends; without it the walk stops there",
    )
    version: int | None = Field(
        default=None, ge=1, le=MAX_INT4, description="default: the current version"
    )


class ValidateRequest(BaseModel):
    model_config = _examples({"definition": EXAMPLE_DEFINITION, "form": EXAMPLE_FORM})

    definition: DefinitionDocument
    org_id: OptionalText = None
    form: SubmitRequest | None = Field(default=None, description="when given, a dry run too")
    task_outcomes: dict[str, TaskOutcome] = Field(default_factory=dict)


# -- tickets and tasks --------------------------------------------------------------------

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


# -- API keys -----------------------------------------------------------------------------

Scope = Literal["submit", "tasks", "admin"]
Origin = Annotated[str, Field(max_length=500, pattern=r"^(\*|https?://[^/\s]+)$")]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "org_id": "org_123",
                    "scopes": ["submit"],
                    "name": "contact form",
                    "allowed_origins": ["https://www.example.com"],
                },
            ]
        }
    )

    org_id: Text
    scopes: list[Scope] = Field(min_length=1, max_length=3)
    name: OptionalText = None
    allowed_origins: list[Origin] = Field(
        default_factory=list,
        max_length=50,
        description="web origins a `submit` key may be used from (none: any)",
    )


class ApiKeyOut(BaseModel):
    id: UUID
    org_id: str
    name: str | None
    scopes: list[str]
    allowed_origins: list[str]
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyMade(ApiKeyOut):
    key: str = Field(description="the key itself: shown in this answer only")
