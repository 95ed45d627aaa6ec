"""A workflow definition as pydantic models: the trigger, the steps, their actions and
transitions. Parsing checks shapes only; `workflow_core.validation` checks the meaning."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

StepType = Literal["auto_action", "human_task", "wait", "wait_for_event", "parallel"]
STEP_TYPES: tuple[str, ...] = ("auto_action", "human_task", "wait", "wait_for_event", "parallel")
JoinMode = Literal["all", "any"]


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
    join: JoinMode = "all"
    """parallel steps: go on when every branch completed (`all`) or the first one (`any`)."""
    branches: list[BranchSpec] = Field(default_factory=list)
    """parallel steps: the chains of steps started together."""


class BranchSpec(_Strict):
    """One branch of a parallel step: a chain of steps starting at the first one, whose
    transitions stay inside the branch."""

    id: str = Field(min_length=1, max_length=200)
    steps: list[StepSpec] = Field(default_factory=list)


class TriggerSpec(_Strict):
    type: str = Field(min_length=1)
    conditions: Any = None
    # A `schedule` trigger's: a cron expression read in an IANA time zone, and whether the
    # ticks missed while no worker ran fire one by one (`catch_up`) or once.
    cron: str | None = None
    timezone: str = "UTC"
    catch_up: bool = False


class ConcurrencySpec(_Strict):
    """At most `limit` runs per rendered `key` (within the organisation) active at once; the
    others are queued and start in the order they were created."""

    key: str = Field(min_length=1, max_length=1000)
    limit: StrictInt = Field(ge=1, le=100_000)


class ThrottleSpec(_Strict):
    """At most `limit` run starts per rendered `key` (within the organisation) in any window
    of `per` (an ISO 8601 duration or seconds); a run over it starts when the window allows."""

    key: str = Field(min_length=1, max_length=1000)
    limit: StrictInt = Field(ge=1, le=1_000_000)
    per: str | StrictFloat | StrictInt


class WorkflowDefinition(_Strict):
    trigger: TriggerSpec
    initial_step_id: str = Field(min_length=1)
    steps: list[StepSpec] = Field(min_length=1)
    concurrency: ConcurrencySpec | None = None
    throttle: ThrottleSpec | None = None

    def step(self, step_id: str) -> StepSpec:
        """A step by id, a branch's step included (ids are unique across the workflow)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        for step in self.all_steps():
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def all_steps(self) -> list[StepSpec]:
        """Every step: the top-level ones, each followed by its branches' steps."""
        found: list[StepSpec] = []
        for step in self.steps:
            found.append(step)
            for branch in step.branches:
                found.extend(branch.steps)
        return found


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


class EventMatch(_Strict):
    """Which event a wait_for_event step takes: the value at `path` in the event (`data.x`,
    `org_id`) equals `equals`, a template rendered when the run begins to wait."""

    path: str = Field(min_length=1, max_length=500)
    equals: StrictStr | StrictInt | StrictFloat | StrictBool


class WaitForEventConfig(_Strict):
    """`config` of a wait_for_event step: the event's type, which one (`match`; none -> the
    first of that type), and how long to wait at most (`timeout`; none -> for ever)."""

    event: str = Field(min_length=1, max_length=200)
    match: EventMatch | None = None
    timeout: str | StrictFloat | StrictInt | None = None


STEP_CONFIGS: dict[str, type[_Strict]] = {
    "human_task": HumanTaskConfig,
    "wait": WaitConfig,
    "wait_for_event": WaitForEventConfig,
}
