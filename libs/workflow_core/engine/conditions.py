"""Conditions: `{"path", "op", "value"}` comparisons combined with `all`, `any` and `not`.

Evaluation never raises. A comparison whose path is missing, or whose two sides are of different
kinds (a number against a string, a boolean against a number), is false whatever the operator,
`!=` included; so is a malformed condition. Numbers compare with numbers, strings with strings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from workflow_core.engine.paths import MISSING, resolve

Condition = Mapping[str, Any]


def _same_kind(a: Any, b: Any) -> bool:
    """Numbers compare with numbers, strings with strings; booleans only with booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return True
    return type(a) is type(b)


def _equals(actual: Any, expected: Any) -> bool:
    return _same_kind(actual, expected) and bool(actual == expected)


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def check(actual: Any, expected: Any) -> bool:
        if not _same_kind(actual, expected) or not isinstance(actual, int | float | str):
            return False
        return compare(actual, expected)

    return check


def _member_of(actual: Any, expected: Any) -> bool:
    if isinstance(expected, list):
        return any(_equals(actual, item) for item in expected)
    if isinstance(expected, str) and isinstance(actual, str):
        return actual in expected
    return False


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, list):
        return any(_equals(item, expected) for item in actual)
    if isinstance(actual, str) and isinstance(expected, str):
        return expected in actual
    if isinstance(actual, Mapping) and isinstance(expected, str):
        return expected in actual
    return False


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _equals,
    "!=": lambda actual, expected: _same_kind(actual, expected) and bool(actual != expected),
    "in": _member_of,
    ">": _ordered(lambda a, b: a > b),
    ">=": _ordered(lambda a, b: a >= b),
    "<": _ordered(lambda a, b: a < b),
    "<=": _ordered(lambda a, b: a <= b),
    "contains": _contains,
}
COMBINATORS = ("all", "any", "not")


def evaluate(condition: Any, context: Mapping[str, Any]) -> bool:
    """Whether `condition` holds in `context`. No condition (None) always holds; a list means
    all of its items."""
    if condition is None:
        return True
    if isinstance(condition, list):
        return all(evaluate(item, context) for item in condition)
    if not isinstance(condition, Mapping):
        return False
    if "all" in condition:
        items = condition["all"]
        return isinstance(items, list) and all(evaluate(c, context) for c in items)
    if "any" in condition:
        items = condition["any"]
        return isinstance(items, list) and any(evaluate(c, context) for c in items)
    if "not" in condition:
        inner = condition["not"]
        return isinstance(inner, Mapping | list) and not evaluate(inner, context)
    return _compare(condition, context)


def _compare(condition: Condition, context: Mapping[str, Any]) -> bool:
    op = condition.get("op")
    operator = OPERATORS.get(op) if isinstance(op, str) else None
    if operator is None:
        return False
    actual = resolve(context, condition.get("path"))  # type: ignore[arg-type]
    if actual is MISSING:
        return False
    try:
        return operator(actual, condition.get("value"))
    except TypeError:  # e.g. unhashable or uncomparable values inside lists
        return False
