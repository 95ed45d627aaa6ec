"""Checks of a definition's steps: unique ids, transitions that lead somewhere in the same
scope, parallel branches, unreachable steps, each step type's config."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import ValidationError

from workflow_core.definitions.models import (
    STEP_CONFIGS,
    StepSpec,
    WaitConfig,
    WaitForEventConfig,
    WorkflowDefinition,
)
from workflow_core.engine.durations import parse_duration
from workflow_core.events import event_type_problem
from workflow_core.validation.problems import Loc, Problem, format_path, pydantic_problems

EVENT_ROOTS = ("event_id", "event_type", "org_id", "data", "received_at")


@dataclass(frozen=True, slots=True)
class Located:
    """A step with its path, and the branch holding it (None: a top-level step)."""

    loc: Loc
    step: StepSpec
    branch: tuple[str, str] | None = None  # (parallel step id, branch id)


def located_steps(definition: WorkflowDefinition) -> list[Located]:
    found: list[Located] = []
    for index, step in enumerate(definition.steps):
        found.append(Located(("steps", index), step))
        for b_index, branch in enumerate(step.branches):
            for s_index, inner in enumerate(branch.steps):
                loc: Loc = ("steps", index, "branches", b_index, "steps", s_index)
                found.append(Located(loc, inner, (step.id, branch.id)))
    return found


def check_steps(definition: WorkflowDefinition) -> Iterator[Problem]:
    located = located_steps(definition)
    first: dict[str, Located] = {}
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


def _check_transitions(item: Located, first: dict[str, Located]) -> Iterator[Problem]:
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


def _scope_message(item: Located, target: Located) -> str:
    where = (
        f"inside branch {target.branch[1]!r} of parallel step {target.branch[0]!r}"
        if target.branch
        else "a top-level step"
    )
    source = f"branch {item.branch[1]!r}" if item.branch else "a top-level step"
    return f"step {target.step.id!r} is {where}: a transition of {source} cannot go there"


def _check_parallel(item: Located) -> Iterator[Problem]:
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
    definition: WorkflowDefinition, located: list[Located], first: dict[str, Located]
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
        yield from pydantic_problems(error, loc)
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
