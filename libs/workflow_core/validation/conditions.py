"""Checks of the conditions of a trigger and of transitions: known operators and
combinators, well-formed comparisons, each problem at its own path."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from workflow_core.definitions.models import (
    WorkflowDefinition,
)
from workflow_core.engine.conditions import COMBINATORS, OPERATORS
from workflow_core.validation.problems import Loc, Problem
from workflow_core.validation.steps import located_steps


def check_conditions(definition: WorkflowDefinition) -> Iterator[Problem]:
    yield from check_condition(definition.trigger.conditions, ("trigger", "conditions"))
    for item in located_steps(definition):
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
