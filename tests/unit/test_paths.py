from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from workflow_core.engine.paths import MISSING, resolve

CONTEXT: dict[str, Any] = {
    "submission_id": "s-1",
    "data": {
        "email": "user@example.com",
        "address": {"city": "Oslo"},
        "items": ["a", "b", "c"],
        "rows": [{"sku": "x1"}],
        "nothing": None,
        "0": "key that looks like an index",
    },
    "obj": SimpleNamespace(secret="hidden"),
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("submission_id", "s-1"),
        ("data.email", "user@example.com"),
        ("data.address.city", "Oslo"),
        ("data.items.0", "a"),
        ("data.items.2", "c"),
        ("data.items.-1", "c"),
        ("data.items.-3", "a"),
        ("data.rows.0.sku", "x1"),
        ("data.0", "key that looks like an index"),
    ],
)
def test_follows_dict_keys_and_list_indexes(path: str, expected: Any) -> None:
    assert resolve(CONTEXT, path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "nope",
        "data.nope",
        "data.email.domain",
        "data.items.3",
        "data.items.-4",
        "data.items.first",
        "data.items.1.x",
        "data.",
        "data..email",
        ".data",
        "",
    ],
)
def test_a_path_that_leads_nowhere_is_missing(path: str) -> None:
    assert resolve(CONTEXT, path) is MISSING


@pytest.mark.parametrize(
    "path",
    [
        "data.__class__",
        "data.keys",
        "data.email.upper",
        "data.items.__len__",
        "obj.secret",
        "obj.__dict__",
        "submission_id.__class__",
    ],
)
def test_attributes_are_never_followed(path: str) -> None:
    assert resolve(CONTEXT, path) is MISSING


@pytest.mark.parametrize("path", [None, 0, ["data", "email"]])
def test_a_path_that_is_not_a_string_is_missing(path: Any) -> None:
    assert resolve(CONTEXT, path) is MISSING


def test_a_present_null_is_none_not_missing() -> None:
    assert resolve(CONTEXT, "data.nothing") is None


def test_a_path_below_a_null_is_missing() -> None:
    assert resolve(CONTEXT, "data.nothing.deeper") is MISSING


def test_missing_is_falsy_and_reads_as_missing() -> None:
    assert not MISSING
    assert repr(MISSING) == "MISSING"


def test_a_non_ascii_digit_index_is_missing_not_an_error() -> None:
    assert resolve(CONTEXT, "data.items.²") is MISSING
