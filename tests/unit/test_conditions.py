from __future__ import annotations

from typing import Any

import pytest

from tests.unit.factories import cond
from workflow_core.engine.conditions import OPERATORS, evaluate


def holds(op: str, actual: Any, value: Any) -> bool:
    """Whether `x <op> value` holds in a context where x is `actual`."""
    return evaluate(cond("x", op, value), {"x": actual})


@pytest.mark.parametrize(
    ("op", "actual", "value"),
    [
        ("==", "form_submitted", "form_submitted"),
        ("==", 3, 3),
        ("==", 1, 1.0),
        ("==", True, True),
        ("==", None, None),
        ("==", {"a": [1]}, {"a": [1]}),
        ("!=", "a", "b"),
        ("!=", 3, 4),
        ("!=", False, True),
        ("in", "gold", ["silver", "gold"]),
        ("in", 2, [1, 2, 3]),
        ("in", "old", "gold"),
        (">", 5, 3),
        (">", 2.5, 2),
        (">", "b", "a"),
        (">=", 3, 3),
        (">=", 4, 3.5),
        ("<", 1, 2),
        ("<", "apple", "banana"),
        ("<=", 3, 3),
        ("<=", 2, 3),
        ("contains", ["vip", "new"], "vip"),
        ("contains", [1, 2], 2),
        ("contains", "hello world", "world"),
        ("contains", {"urgent": True}, "urgent"),
    ],
)
def test_operator_holds(op: str, actual: Any, value: Any) -> None:
    assert holds(op, actual, value)


@pytest.mark.parametrize(
    ("op", "actual", "value"),
    [
        ("==", "form_submitted", "other"),
        ("==", 3, 4),
        ("!=", "a", "a"),
        ("!=", 3, 3.0),
        ("!=", None, None),
        ("in", "bronze", ["silver", "gold"]),
        ("in", "xyz", "gold"),
        ("in", "gold", []),
        (">", 3, 3),
        (">", "a", "b"),
        (">=", 2, 3),
        ("<", 2, 2),
        ("<=", 4, 3),
        ("contains", ["vip"], "new"),
        ("contains", "hello", "world"),
        ("contains", {"urgent": True}, "vip"),
        ("contains", {"key": "value"}, "value"),
    ],
)
def test_operator_does_not_hold(op: str, actual: Any, value: Any) -> None:
    assert not holds(op, actual, value)


@pytest.mark.parametrize("op", sorted(OPERATORS))
@pytest.mark.parametrize("value", [None, "x", 0, [], ["x"]])
def test_a_missing_path_is_false_for_every_operator(op: str, value: Any) -> None:
    assert not evaluate(cond("data.nope", op, value), {"data": {}})


def test_the_operator_set_is_the_contracts() -> None:
    assert set(OPERATORS) == {"==", "!=", "in", ">", ">=", "<", "<=", "contains"}


@pytest.mark.parametrize(
    ("op", "actual", "value"),
    [
        # number against string
        ("==", 1, "1"),
        ("!=", 1, "1"),
        ("!=", "a", 1),
        (">", "2", 1),
        (">=", "1", 1),
        ("<", 1, "2"),
        ("<=", 1, "1"),
        ("in", 1, ["1"]),
        ("in", 1, "123"),
        ("contains", ["1"], 1),
        ("contains", "123", 1),
        # boolean against number: Python says True == 1; conditions do not
        ("==", True, 1),
        ("==", 1, True),
        ("==", 0, False),
        ("!=", True, 2),
        (">", True, 0),
        (">=", True, 1),
        ("<", False, 1),
        ("<=", False, 0),
        ("in", True, [1]),
        ("in", 1, [True]),
        ("contains", [1], True),
        ("contains", [True], 1),
        # null against a value
        ("!=", None, "x"),
        ("==", None, 0),
    ],
)
def test_a_type_mismatch_is_false_for_every_operator(op: str, actual: Any, value: Any) -> None:
    assert not holds(op, actual, value)


@pytest.mark.parametrize("op", [">", ">=", "<", "<="])
@pytest.mark.parametrize(("actual", "value"), [([1], [1]), ({"a": 1}, {"a": 1}), (None, None)])
def test_ordering_only_applies_to_numbers_and_strings(op: str, actual: Any, value: Any) -> None:
    assert not holds(op, actual, value)


def test_a_present_null_differs_from_a_missing_path() -> None:
    assert evaluate(cond("data.middle_name", "==", None), {"data": {"middle_name": None}})
    assert not evaluate(cond("data.middle_name", "==", None), {"data": {}})


def test_a_dotted_path_reaches_into_the_context() -> None:
    context = {"data": {"order": {"lines": [{"qty": 7}]}}}
    assert evaluate(cond("data.order.lines.0.qty", ">=", 5), context)


T = cond("n", "==", 1)
F = cond("n", "==", 2)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"all": [T, T]}, True),
        ({"all": [T, F]}, False),
        ({"all": []}, True),
        ({"any": [F, T]}, True),
        ({"any": [F, F]}, False),
        ({"any": []}, False),
        ({"not": T}, False),
        ({"not": F}, True),
        ({"not": {"not": T}}, True),
        ({"all": [T, {"any": [F, {"not": F}]}]}, True),
        ({"all": [T, {"any": [F, {"not": T}]}]}, False),
        ({"any": [{"all": [T, F]}, {"all": [T, {"not": F}]}]}, True),
        ({"not": [T, F]}, True),
    ],
)
def test_combinators(condition: dict[str, Any], expected: bool) -> None:
    assert evaluate(condition, {"n": 1}) is expected


def test_no_condition_always_holds() -> None:
    assert evaluate(None, {})


@pytest.mark.parametrize(("conditions", "expected"), [([T, T], True), ([T, F], False), ([], True)])
def test_a_list_of_conditions_means_all(conditions: list[Any], expected: bool) -> None:
    assert evaluate(conditions, {"n": 1}) is expected


@pytest.mark.parametrize(
    "condition",
    [
        "n == 1",
        1,
        True,
        {},
        {"path": "n", "op": "~=", "value": 1},
        {"path": "n", "op": "eq", "value": 1},
        {"path": "n", "value": 1},
        {"op": "==", "value": 1},
        {"path": 5, "op": "==", "value": 1},
        {"path": None, "op": "==", "value": 1},
        {"all": "n == 1"},
        {"all": T},
        {"any": None},
        {"not": "n == 2"},
        {"not": None},
        [T, "garbage"],
    ],
)
def test_a_malformed_condition_is_false_and_never_raises(condition: Any) -> None:
    assert evaluate(condition, {"n": 1}) is False


@pytest.mark.parametrize("op", [["=="], {"eq": 1}])
def test_an_unhashable_operator_is_false_and_never_raises(op: Any) -> None:
    assert evaluate({"path": "n", "op": op, "value": 1}, {"n": 1}) is False


def test_a_path_with_an_odd_index_is_false_and_never_raises() -> None:
    assert evaluate(cond("data.items.²", "==", "a"), {"data": {"items": ["a"]}}) is False
