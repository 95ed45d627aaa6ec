"""Validation of a workflow definition with errors that name JSON paths such as
`steps[1].transitions[0].to`. Errors make a definition unusable (the API answers 422);
warnings (a template placeholder that can never resolve) are returned beside a saved one.

Given the deployment's WEBHOOK_ALLOWED_HOSTS (the API passes it), a webhook URL whose host is
written as an address that no webhook may call is an error too: the workers would refuse
every call of it. Without it (the worker's catalog reading stored definitions) that rule is
left to the HTTP adapter, which refuses the call and fails the run with the reason."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from workflow_core import actions
from workflow_core.definitions.models import (
    STEP_CONFIGS,
    StepSpec,
    WaitConfig,
    WaitForEventConfig,
    WorkflowDefinition,
)
from workflow_core.destinations import ALLOWED_HOSTS, AllowedHosts
from workflow_core.engine.conditions import COMBINATORS, OPERATORS
from workflow_core.engine.context import CONTEXT_ROOTS
from workflow_core.engine.durations import parse_duration
from workflow_core.engine.schedule import SCHEDULE, cron_problem, timezone_problem
from workflow_core.engine.templates import placeholders
from workflow_core.events import FORM_SUBMITTED, event_type_problem

EVENT_ROOTS = ("event_id", "event_type", "org_id", "data", "received_at")
"""What a wait_for_event step's `match.path` can start with: the parts of a posted event."""

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    loc: Loc
    msg: str
    type: str

    @property
    def path(self) -> str:
        return format_path(self.loc)

    def as_dict(self, prefix: Loc = ()) -> dict[str, Any]:
        return {"loc": [*prefix, *self.loc], "path": self.path, "msg": self.msg, "type": self.type}


@dataclass(slots=True)
class ValidationResult:
    definition: WorkflowDefinition | None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.definition is not None and not self.errors


def format_path(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "definition"


def validate_definition(raw: Any, *, allowed_hosts: AllowedHosts | None = None) -> ValidationResult:
    """Parse and check `raw`; the definition is returned only when there are no errors.
    `allowed_hosts`: check webhook destinations written as addresses against it."""
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as error:
        return ValidationResult(None, errors=list(_pydantic_problems(error)))
    errors = [
        *_check_steps(definition),
        *_check_conditions(definition),
        *_check_actions(definition, allowed_hosts),
        *_check_schedule(definition),
        *_check_throttle(definition),
    ]
    warnings = [*_unknown_trigger_type(definition), *_unresolvable_placeholders(definition)]
    return ValidationResult(None if errors else definition, errors, warnings)


def _pydantic_problems(error: ValidationError, prefix: Loc = ()) -> Iterator[Problem]:
    for item in error.errors(include_url=False):
        loc = tuple(part for part in item["loc"] if not _is_union_tag(part))
        yield Problem((*prefix, *loc), item["msg"], item["type"])


def _is_union_tag(part: str | int) -> bool:
    # pydantic puts the union member's name into loc ("str", "float", "list[str]" ...).
    return isinstance(part, str) and (
        part in {"str", "float", "int", "list[str]", "none"}
        or part.startswith(("function-", "list[", "dict["))
    )


@dataclass(frozen=True, slots=True)
class _Located:
    """A step with its path, and the branch holding it (None: a top-level step)."""

    loc: Loc
    step: StepSpec
    branch: tuple[str, str] | None = None  # (parallel step id, branch id)


def _located_steps(definition: WorkflowDefinition) -> list[_Located]:
    found: list[_Located] = []
    for index, step in enumerate(definition.steps):
        found.append(_Located(("steps", index), step))
        for b_index, branch in enumerate(step.branches):
            for s_index, inner in enumerate(branch.steps):
                loc: Loc = ("steps", index, "branches", b_index, "steps", s_index)
                found.append(_Located(loc, inner, (step.id, branch.id)))
    return found


def _check_steps(definition: WorkflowDefinition) -> Iterator[Problem]:
    located = _located_steps(definition)
    first: dict[str, _Located] = {}
    for item in located:
        if item.step.id in first:
            yield Problem(
                (*item.loc, "id"),
                f"duplicate step id {item.step.id!r} (also {format_path(first[item.step.id].loc)})",
                "duplicate_step_id",
            )
        else:
            first[item.step.id] = item
    top = [item.step.id for item in located if item.branch is None]
    if definition.initial_step_id not in top:
        where = "a top-level step" if definition.initial_step_id in first else "no step"
        yield Problem(
            ("initial_step_id",),
            f"{where} has id {definition.initial_step_id!r}; the run starts at one of "
            f"{', '.join(map(repr, top))}",
            "unknown_step",
        )
    for item in located:
        yield from _check_transitions(item, first)
        yield from _check_step_config(item.loc, item.step)
        yield from _check_parallel(item)
    yield from _unreachable(definition, located, first)


def _check_transitions(item: _Located, first: dict[str, _Located]) -> Iterator[Problem]:
    """A transition goes to a step of its own scope: a branch's steps go to steps of the same
    branch (the branch ends where no transition holds), top-level steps to top-level steps."""
    for t_index, transition in enumerate(item.step.transitions):
        loc: Loc = (*item.loc, "transitions", t_index, "to")
        target = first.get(transition.to)
        if target is None:
            scope = [i.step.id for i in first.values() if i.branch == item.branch]
            yield Problem(
                loc,
                f"no step has id {transition.to!r} (steps: {', '.join(map(repr, scope))})",
                "unknown_step",
            )
        elif target.branch != item.branch:
            yield Problem(loc, _scope_message(item, target), "transition_scope")


def _scope_message(item: _Located, target: _Located) -> str:
    where = (
        f"inside branch {target.branch[1]!r} of parallel step {target.branch[0]!r}"
        if target.branch
        else "a top-level step"
    )
    source = f"branch {item.branch[1]!r}" if item.branch else "a top-level step"
    return f"step {target.step.id!r} is {where}: a transition of {source} cannot go there"


def _check_parallel(item: _Located) -> Iterator[Problem]:
    step, loc = item.step, item.loc
    if step.type != "parallel":
        if step.branches:
            yield Problem((*loc, "branches"), "only parallel steps have branches", "branches")
        if "join" in step.model_fields_set:
            yield Problem((*loc, "join"), "only parallel steps have `join`", "branches")
        return
    if item.branch is not None:
        yield Problem(
            (*loc, "type"), "a parallel step cannot be inside a branch (no nesting)", "nested"
        )
    if step.actions:
        yield Problem(
            (*loc, "actions"),
            "a parallel step has no actions of its own: put them in its branches",
            "branches",
        )
    if not step.branches:
        yield Problem((*loc, "branches"), "a parallel step needs at least one branch", "branches")
    seen: set[str] = set()
    for b_index, branch in enumerate(step.branches):
        if branch.id in seen:
            yield Problem(
                (*loc, "branches", b_index, "id"), f"duplicate branch id {branch.id!r}", "branches"
            )
        seen.add(branch.id)
        if not branch.steps:
            yield Problem(
                (*loc, "branches", b_index, "steps"), "a branch needs at least one step", "branches"
            )


def _unreachable(
    definition: WorkflowDefinition, located: list[_Located], first: dict[str, _Located]
) -> Iterator[Problem]:
    """Top-level steps are reached from the initial step, a branch's from its first step."""
    starts = [definition.initial_step_id]
    starts += [b.steps[0].id for s in definition.steps for b in s.branches if b.steps]
    targets = {item.step.id: [t.to for t in item.step.transitions] for item in located}
    seen: set[str] = set()
    todo = [start for start in starts if start in first]
    while todo:
        step_id = todo.pop()
        if step_id not in seen and step_id in targets:
            seen.add(step_id)
            todo.extend(targets[step_id])
    if definition.initial_step_id not in first:
        return
    for item in located:
        if item.step.id not in seen and first.get(item.step.id) is item:
            start = (
                f"the initial step {definition.initial_step_id!r}"
                if item.branch is None
                else f"the first step of branch {item.branch[1]!r}"
            )
            yield Problem(
                item.loc,
                f"step {item.step.id!r} cannot be reached from {start}",
                "unreachable_step",
            )


def _check_step_config(step_loc: Loc, step: StepSpec) -> Iterator[Problem]:
    loc: Loc = (*step_loc, "config")
    model = STEP_CONFIGS.get(step.type)
    if model is None:
        for key in step.config:
            yield Problem(
                (*loc, key), f"{step.type} steps take no config field {key!r}", "extra_forbidden"
            )
        return
    try:
        config = model.model_validate(step.config)
    except ValidationError as error:
        yield from _pydantic_problems(error, loc)
        return
    if isinstance(config, WaitConfig) and (config.for_ is None) == (config.until_path is None):
        yield Problem(
            loc,
            "a wait step needs exactly one of `for` (a duration) or "
            "`until_path` (a path to a timestamp)",
            "wait_config",
        )
    if isinstance(config, WaitForEventConfig):
        yield from _check_wait_for_event(config, loc)
    for name in ("for_", "due_in", "timeout"):
        value = getattr(config, name, None)
        if value is not None:
            try:
                parse_duration(value)
            except ValueError as error:
                yield Problem((*loc, name.rstrip("_")), str(error), "duration")


def _check_wait_for_event(config: WaitForEventConfig, loc: Loc) -> Iterator[Problem]:
    problem = event_type_problem(config.event)
    if problem:
        yield Problem((*loc, "event"), problem, "event_type")
    if config.match is not None and config.match.path.split(".")[0] not in EVENT_ROOTS:
        yield Problem(
            (*loc, "match", "path"),
            f"{config.match.path!r} is not in an event: a path starts with one of "
            f"{', '.join(EVENT_ROOTS)}",
            "event_path",
        )


def _check_conditions(definition: WorkflowDefinition) -> Iterator[Problem]:
    yield from check_condition(definition.trigger.conditions, ("trigger", "conditions"))
    for item in _located_steps(definition):
        for t_index, transition in enumerate(item.step.transitions):
            yield from check_condition(
                transition.conditions, (*item.loc, "transitions", t_index, "conditions")
            )


def check_condition(condition: Any, loc: Loc) -> Iterator[Problem]:
    """Problems with one condition (recursively), each at its own path."""
    if condition is None:
        return
    if isinstance(condition, list):
        for index, item in enumerate(condition):
            yield from check_condition(item, (*loc, index))
        return
    if not isinstance(condition, Mapping):
        yield Problem(
            loc, "a condition is an object: {path, op, value} or all/any/not", "condition_type"
        )
        return
    combinators = [key for key in COMBINATORS if key in condition]
    if combinators:
        key = combinators[0]
        if len(condition) != 1:
            yield Problem(loc, f"`{key}` stands alone in its object", "condition_shape")
        inner = condition[key]
        if key == "not":
            if inner is None:
                yield Problem((*loc, key), "`not` needs a condition", "condition_type")
            yield from check_condition(inner, (*loc, key))
        elif not isinstance(inner, list):
            yield Problem((*loc, key), f"`{key}` takes a list of conditions", "condition_type")
        else:
            for index, item in enumerate(inner):
                yield from check_condition(item, (*loc, key, index))
        return
    yield from _check_comparison(condition, loc)


def _check_comparison(condition: Mapping[str, Any], loc: Loc) -> Iterator[Problem]:
    for key in condition:
        if key not in {"path", "op", "value"}:
            yield Problem(
                (*loc, key),
                f"unknown condition field {key!r}: use path, op, value or all/any/not",
                "extra_forbidden",
            )
    if not isinstance(condition.get("path"), str) or not condition.get("path"):
        yield Problem(
            (*loc, "path"), "a comparison needs `path`, a dotted path such as data.email", "missing"
        )
    op = condition.get("op")
    if not isinstance(op, str) or op not in OPERATORS:
        yield Problem(
            (*loc, "op"), f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}", "operator"
        )
    if "value" not in condition:
        yield Problem((*loc, "value"), "a comparison needs `value`", "missing")
    elif op == "in" and not isinstance(condition["value"], list | str):
        yield Problem(
            (*loc, "value"), "`in` needs a list (or a string) as its value", "condition_value"
        )


def _check_actions(
    definition: WorkflowDefinition, allowed_hosts: AllowedHosts | None
) -> Iterator[Problem]:
    context = None if allowed_hosts is None else {ALLOWED_HOSTS: allowed_hosts}
    for item in _located_steps(definition):
        for a_index, action in enumerate(item.step.actions):
            loc: Loc = (*item.loc, "actions", a_index)
            action_type = actions.get(action.type)
            if action_type is None:
                yield Problem(
                    (*loc, "type"),
                    f"unknown action type {action.type!r}; use one of "
                    f"{', '.join(sorted(actions.REGISTRY))}",
                    "unknown_action",
                )
                continue
            try:
                action_type.config.model_validate(action.config, context=context)
            except ValidationError as error:
                yield from _pydantic_problems(error, (*loc, "config"))


def _check_schedule(definition: WorkflowDefinition) -> Iterator[Problem]:
    trigger = definition.trigger
    if trigger.type != SCHEDULE:
        if trigger.cron is not None:
            yield Problem(
                ("trigger", "cron"),
                f"`cron` belongs to a {SCHEDULE!r} trigger, not to {trigger.type!r}",
                "schedule",
            )
        return
    if trigger.cron is None:
        yield Problem(("trigger", "cron"), "a schedule trigger needs `cron`", "missing")
    elif problem := cron_problem(trigger.cron):
        yield Problem(("trigger", "cron"), problem, "cron")
    if problem := timezone_problem(trigger.timezone):
        yield Problem(("trigger", "timezone"), problem, "timezone")


def _check_throttle(definition: WorkflowDefinition) -> Iterator[Problem]:
    throttle = definition.throttle
    if throttle is None:
        return
    try:
        per = parse_duration(throttle.per)
    except ValueError as error:
        yield Problem(("throttle", "per"), str(error), "duration")
        return
    if per.total_seconds() <= 0:
        yield Problem(
            ("throttle", "per"), "the throttle's window must be longer than 0", "duration"
        )


def _unknown_trigger_type(definition: WorkflowDefinition) -> Iterator[Problem]:
    """A trigger type no event can have (a typo, most often) saves fine and never starts a
    run: forms send `form_submitted`, schedules `schedule`, POST /events any well-formed type
    name."""
    name = definition.trigger.type
    problem = None if name in (FORM_SUBMITTED, SCHEDULE) else event_type_problem(name)
    if problem:
        yield Problem(
            ("trigger", "type"),
            f"no event has type {name!r} ({problem}), so this workflow will never run",
            "trigger_type",
        )


def _unresolvable_placeholders(definition: WorkflowDefinition) -> Iterator[Problem]:
    step_ids = {step.id for step in definition.all_steps()}
    has_task = any(step.type == "human_task" for step in definition.all_steps())
    for loc, text in _template_strings(definition):
        for path in placeholders(text):
            reason = _never_resolves(path, step_ids, has_task)
            if reason:
                yield Problem(
                    loc,
                    f"placeholder {{{path}}} {reason}; it will be left as written",
                    "placeholder",
                )


def _template_strings(definition: WorkflowDefinition) -> Iterator[tuple[Loc, str]]:
    """Every string that is rendered as a template: step configs, action configs, and the
    concurrency and throttle keys."""
    for name, spec in (("concurrency", definition.concurrency), ("throttle", definition.throttle)):
        if spec is not None:
            yield (name, "key"), spec.key
    for item in _located_steps(definition):
        yield from _strings(item.step.config, (*item.loc, "config"))
        for a_index, action in enumerate(item.step.actions):
            yield from _strings(action.config, (*item.loc, "actions", a_index, "config"))


def _never_resolves(path: str, step_ids: set[str], has_task: bool) -> str | None:
    root, _, rest = path.partition(".")
    if root not in CONTEXT_ROOTS:
        return (
            f"refers to {root!r}, which is not in the context ({', '.join(sorted(CONTEXT_ROOTS))})"
        )
    if root == "steps" and rest and rest.partition(".")[0] not in step_ids:
        return f"refers to step {rest.partition('.')[0]!r}, which this workflow does not have"
    if root == "task" and not has_task:
        return "refers to a task, but this workflow has no human_task step"
    return None


def _strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*loc, index))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, (*loc, key))
