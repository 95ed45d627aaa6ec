"""Warnings about templates: a placeholder that can never resolve (not in the context, an
unknown step, a task in a workflow without one) is left as written at run time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from workflow_core.definitions.models import (
    WorkflowDefinition,
)
from workflow_core.engine.context import CONTEXT_ROOTS
from workflow_core.engine.templates import placeholders
from workflow_core.validation.problems import Loc, Problem
from workflow_core.validation.steps import located_steps


def unresolvable_placeholders(definition: WorkflowDefinition) -> Iterator[Problem]:
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
    for item in located_steps(definition):
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
