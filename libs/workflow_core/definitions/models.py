"""A workflow definition as pydantic models: the trigger, the steps, their actions and
transitions. Parsing checks shapes only; `workflow_core.validation` checks the meaning."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

StepType = Literal["auto_action", "human_task", "wait"]
STEP_TYPES: tuple[str, ...] = ("auto_action", "human_task", "wait")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """Per-action override of the retry schedule (seconds)."""

    max_attempts: int = Field(default=5, ge=1, le=100)
    initial_delay: float = Field(default=1.0, ge=0, le=86_400)
    max_delay: float = Field(default=300.0, ge=0, le=86_400)


class ActionSpec(_Strict):
    type: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy | None = None


class TransitionSpec(_Strict):
    to: str = Field(min_length=1)
    conditions: Any = None


class StepSpec(_Strict):
    id: str = Field(min_length=1, max_length=200)
    name: str = ""
    description: str = ""
    type: StepType
    actions: list[ActionSpec] = Field(default_factory=list)
    transitions: list[TransitionSpec] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)


class TriggerSpec(_Strict):
    type: str = Field(min_length=1)
    conditions: Any = None


class WorkflowDefinition(_Strict):
    trigger: TriggerSpec
    initial_step_id: str = Field(min_length=1)
    steps: list[StepSpec] = Field(min_length=1)

    def step(self, step_id: str) -> StepSpec:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


Outcome = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[^\x00-\x1f\x7f]+$")]
FieldPath = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\s{}]+$")]


class HumanTaskConfig(_Strict):
    """`config` of a human_task step."""

    title: str | None = None
    description: str | None = None
    assignee: str | None = None
    assignee_email: str | None = None
    due_in: str | StrictFloat | StrictInt | None = None
    outcomes: list[Outcome] | None = Field(default=None, min_length=1, max_length=10)
    """The answers the assignee may give: the email carries one link for each, and
    completing the task with any other is refused."""
    fields: list[FieldPath] = Field(default_factory=list, max_length=50)
    """The form fields (paths under `data`, e.g. `amount` or `address.city`) the assignee
    sees in the email and on the task's page."""

    @field_validator("outcomes")
    @classmethod
    def _unique(cls, outcomes: list[str] | None) -> list[str] | None:
        if outcomes is not None and len(set(outcomes)) != len(outcomes):
            raise ValueError("each outcome may appear once")
        return outcomes


class WaitConfig(_Strict):
    """`config` of a wait step: either a duration or a path to a timestamp in the context."""

    for_: str | StrictFloat | StrictInt | None = Field(default=None, alias="for")
    until_path: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


STEP_CONFIGS: dict[str, type[_Strict]] = {
    "human_task": HumanTaskConfig,
    "wait": WaitConfig,
}
