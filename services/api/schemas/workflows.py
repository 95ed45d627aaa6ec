"""Bodies of the workflow routes: a definition sent in, a workflow read back, and the
dry run / validation requests that try a definition without running it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    WithJsonSchema,
    model_validator,
)

from services.api.schemas.documents import (
    MAX_INT4,
    Document,
    OptionalText,
    Text,
    check_document,
    with_examples,
)
from services.api.schemas.submissions import EXAMPLE_FORM, EventPost, SubmitRequest
from workflow_core.definitions import WorkflowDefinition

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
    model_config = with_examples(
        {"name": "Send Email on Form Submission", "definition": EXAMPLE_DEFINITION}
    )

    name: Text
    definition: DefinitionDocument
    org_id: OptionalText = None
    key: WorkflowKey | None = None


class WorkflowUpdate(BaseModel):
    model_config = with_examples(
        {"name": "Confirm each submission", "definition": EXAMPLE_DEFINITION}
    )

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


class TaskOutcome(BaseModel):
    """How a human task ends in a dry run."""

    outcome: Annotated[str, AfterValidator(check_document)] | None = None
    data: Document = Field(default_factory=dict)


def _one_sample(form: SubmitRequest | None, event: EventPost | None, *, required: bool) -> None:
    if form is not None and event is not None:
        raise ValueError("give a sample `form` or a sample `event`, not both")
    if required and form is None and event is None:
        raise ValueError(
            "give a sample `form` (for a form_submitted trigger) or a sample `event` "
            "(`type`, `data`, as POST /events takes it)"
        )


_FORM_SAMPLE = "a sample submission, as POST /submit takes it (a form_submitted trigger)"
_EVENT_SAMPLE = (
    "a sample event, as POST /events takes it (a trigger of another type); give `form` or `event`"
)


class DryRunRequest(BaseModel):
    model_config = with_examples({"form": EXAMPLE_FORM})

    form: SubmitRequest | None = Field(default=None, description=_FORM_SAMPLE)
    event: EventPost | None = Field(default=None, description=_EVENT_SAMPLE)
    task_outcomes: dict[str, TaskOutcome] = Field(
        default_factory=dict,
        description="per human_task step id, how its task ends; without it the walk stops there",
    )
    version: int | None = Field(
        default=None, ge=1, le=MAX_INT4, description="default: the current version"
    )

    @model_validator(mode="after")
    def _a_sample(self) -> DryRunRequest:
        _one_sample(self.form, self.event, required=True)
        return self


class ValidateRequest(BaseModel):
    model_config = with_examples({"definition": EXAMPLE_DEFINITION, "form": EXAMPLE_FORM})

    definition: DefinitionDocument
    org_id: OptionalText = None
    form: SubmitRequest | None = Field(default=None, description="when given, a dry run too")
    event: EventPost | None = Field(
        default=None, description="a sample event instead of `form`: a dry run too"
    )
    task_outcomes: dict[str, TaskOutcome] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _at_most_one_sample(self) -> ValidateRequest:
        _one_sample(self.form, self.event, required=False)
        return self
