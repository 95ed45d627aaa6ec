from __future__ import annotations

from typing import Any

import pytest

from tests.unit.factories import example_context, example_definition
from workflow_core.engine.templates import placeholders, render, render_header, render_value


def example_email_config() -> dict[str, Any]:
    config: dict[str, Any] = example_definition()["steps"][0]["actions"][0]["config"]
    return config


def test_the_original_example_subject_renders_exactly() -> None:
    subject = render(example_email_config()["subject"], example_context())
    assert subject == "Form Submission Confirmation - form_submitted"


def test_the_original_example_body_renders_exactly() -> None:
    context = example_context()
    body = render(example_email_config()["body"], context)
    assert body == (
        "Hello,\n\nYour form submission has been received.\n\n"
        f"Submission ID: {context['submission_id']}\nTemplate: form_submitted\n\nThank you!"
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {data.name}", "Hi Ada"),
        ("{data.address.city}!", "Oslo!"),
        ("first={data.tags.0} last={data.tags.-1}", "first=red last=blue"),
        ("{steps.open.ticket_id}", "T-42"),
        ("{data.name}/{data.name}", "Ada/Ada"),
        ("{data.名前} {data.e-mail} {data.Größe}", "太郎 ada@example.com 1.7"),
    ],
)
def test_dotted_placeholders(template: str, expected: str) -> None:
    context = {
        "data": {
            "name": "Ada",
            "address": {"city": "Oslo"},
            "tags": ["red", "blue"],
            "名前": "太郎",
            "e-mail": "ada@example.com",
            "Größe": 1.7,
        },
        "steps": {"open": {"ticket_id": "T-42"}},
    }
    assert render(template, context) == expected


@pytest.mark.parametrize(
    "template",
    [
        "{foo}",
        "{data.nope}",
        "{data.name.first}",
        "{steps.missing.id}",
        "{0}",
        "{٣}",
        "{}",
        "{data.first name}",
        "{data.__class__}",
        "{data.__class__.__init__.__globals__}",
        "{data.name!r}",
        "{data.name:>20}",
        "{ data.name }",
        '{"json": true}',
    ],
)
def test_what_does_not_resolve_is_left_as_written(template: str) -> None:
    assert render(template, {"data": {"name": "Ada"}}) == template


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42, "42"),
        (-1.5, "-1.5"),
        (True, "true"),
        (False, "false"),
        (None, ""),
        ({"b": 1, "a": "x"}, '{"a":"x","b":1}'),
        ([1, "two", None], '[1,"two",null]'),
        ("", ""),
    ],
)
def test_non_string_values_render_as_json(value: Any, expected: str) -> None:
    assert render("<{data.v}>", {"data": {"v": value}}) == f"<{expected}>"


def test_a_string_value_is_inserted_verbatim() -> None:
    value = 'quote " brace {data.v} newline\n'
    assert render("{data.v}", {"data": {"v": value}}) == value


def test_line_breaks_in_a_body_are_kept() -> None:
    assert render("a\n{data.v}\r\nb", {"data": {"v": "x\ny"}}) == "a\nx\ny\r\nb"


@pytest.mark.parametrize("line_break", ["\r\n", "\n", "\r", "\u2028", "\x85", "\x0b", "\x0c"])
def test_a_header_never_carries_a_line_break_from_user_data(line_break: str) -> None:
    name = f"x{line_break}Bcc: evil@x"
    subject = render_header("{data.name}", {"data": {"name": name}})
    assert "\r" not in subject
    assert "\n" not in subject
    assert len(subject.splitlines()) == 1


def test_a_header_never_carries_a_line_break_from_the_template() -> None:
    subject = render_header("Hello\r\n{data.name}\n", {"data": {"name": "Ada"}})
    assert "\r" not in subject
    assert "\n" not in subject
    assert "Hello" in subject
    assert "Ada" in subject


def test_placeholders_lists_the_paths_a_template_refers_to() -> None:
    template = "Hi {data.name}, ticket {steps.open.ticket_id} for {submission_id}; {0} {}"
    assert list(placeholders(template)) == ["data.name", "steps.open.ticket_id", "submission_id"]


def test_placeholders_of_plain_text_is_empty() -> None:
    assert list(placeholders("no placeholders {here either} { }")) == []


def test_render_value_renders_every_string_in_a_nested_structure() -> None:
    context = {"submission_id": "s-1", "data": {"name": "Ada", "age": 36}}
    value = {
        "title": "Form from {data.name}",
        "fields": [{"label": "age", "value": "{data.age}"}, "{submission_id}"],
        "count": 3,
        "flag": False,
        "nothing": None,
    }
    assert render_value(value, context) == {
        "title": "Form from Ada",
        "fields": [{"label": "age", "value": 36}, "s-1"],
        "count": 3,
        "flag": False,
        "nothing": None,
    }


def test_a_lone_placeholder_keeps_the_type_of_its_value_and_text_makes_text() -> None:
    context = {"data": {"n": 3, "items": ["a", "b"], "ok": True, "none": None}}
    assert render_value(
        {
            "n": "{data.n}",
            "items": "{data.items}",
            "ok": "{data.ok}",
            "none": "{data.none}",
            "missing": "{data.missing}",
            "text": "n={data.n}",
        },
        context,
    ) == {
        "n": 3,
        "items": ["a", "b"],
        "ok": True,
        "none": None,
        "missing": "{data.missing}",
        "text": "n=3",
    }


def test_render_value_leaves_keys_alone() -> None:
    assert render_value({"{data.name}": "x"}, {"data": {"name": "Ada"}}) == {"{data.name}": "x"}
