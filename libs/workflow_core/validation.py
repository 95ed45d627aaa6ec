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
from workflow_core.definitions.models import STEP_CONFIGS, StepSpec, WaitConfig, WorkflowDefinition
from workflow_core.destinations import ALLOWED_HOSTS, AllowedHosts
from workflow_core.engine.conditions import COMBINATORS, OPERATORS
from workflow_core.engine.context import CONTEXT_ROOTS
from workflow_core.engine.durations import parse_duration
from workflow_core.engine.templates import placeholders
from workflow_core.events import FORM_SUBMITTED

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


def _check_steps(definition: WorkflowDefinition) -> Iterator[Problem]:
    first_index: dict[str, int] = {}
    for index, step in enumerate(definition.steps):
        if step.id in first_index:
            yield Problem(
                ("steps", index, "id"),
                f"duplicate step id {step.id!r} (also steps[{first_index[step.id]}])",
                "duplicate_step_id",
            )
        else:
            first_index[step.id] = index
    known = ", ".join(repr(step_id) for step_id in first_index)
    if definition.initial_step_id not in first_index:
        yield Problem(
            ("initial_step_id",),
            f"no step has id {definition.initial_step_id!r} (steps: {known})",
            "unknown_step",
        )
    for index, step in enumerate(definition.steps):
        for t_index, transition in enumerate(step.transitions):
            if transition.to not in first_index:
                yield Problem(
                    ("steps", index, "transitions", t_index, "to"),
                    f"no step has id {transition.to!r} (steps: {known})",
                    "unknown_step",
                )
        yield from _check_step_config(index, step)
    if definition.initial_step_id in first_index:
        reachable = _reachable(definition)
        for index, step in enumerate(definition.steps):
            if step.id not in reachable and first_index.get(step.id) == index:
                yield Problem(
                    ("steps", index),
                    f"step {step.id!r} cannot be reached from the initial step "
                    f"{definition.initial_step_id!r}",
                    "unreachable_step",
                )


def _reachable(definition: WorkflowDefinition) -> set[str]:
    targets = {step.id: [t.to for t in step.transitions] for step in definition.steps}
    seen: set[str] = set()
    todo = [definition.initial_step_id]
    while todo:
        step_id = todo.pop()
        if step_id not in seen and step_id in targets:
            seen.add(step_id)
            todo.extend(targets[step_id])
    return seen


def _check_step_config(index: int, step: StepSpec) -> Iterator[Problem]:
    loc: Loc = ("steps", index, "config")
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
    for name in ("for_", "due_in"):
        value = getattr(config, name, None)
        if value is not None:
            try:
                parse_duration(value)
            except ValueError as error:
                yield Problem((*loc, name.rstrip("_")), str(error), "duration")


def _check_conditions(definition: WorkflowDefinition) -> Iterator[Problem]:
    yield from check_condition(definition.trigger.conditions, ("trigger", "conditions"))
    for index, step in enumerate(definition.steps):
        for t_index, transition in enumerate(step.transitions):
            yield from check_condition(
                transition.conditions, ("steps", index, "transitions", t_index, "conditions")
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
    for index, step in enumerate(definition.steps):
        for a_index, action in enumerate(step.actions):
            loc: Loc = ("steps", index, "actions", a_index)
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
    """A trigger type no event has (a typo, most often) saves fine and never starts a run."""
    if definition.trigger.type != FORM_SUBMITTED:
        yield Problem(
            ("trigger", "type"),
            f"no event has type {definition.trigger.type!r}: only {FORM_SUBMITTED!r} starts "
            "runs, so this workflow will never run",
            "trigger_type",
        )


def _unresolvable_placeholders(definition: WorkflowDefinition) -> Iterator[Problem]:
    step_ids = {step.id for step in definition.steps}
    has_task = any(step.type == "human_task" for step in definition.steps)
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
    for index, step in enumerate(definition.steps):
        yield from _strings(step.config, ("steps", index, "config"))
        for a_index, action in enumerate(step.actions):
            yield from _strings(action.config, ("steps", index, "actions", a_index, "config"))


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
