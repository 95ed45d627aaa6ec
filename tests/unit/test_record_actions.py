"""The ticket and task actions without a database: their configs as the definition validator
sees them (errors at JSON paths), their previews, and how they find the record to change."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.factories import definition_dict, example_context, step
from workflow_core.actions.create_task import CreateTaskConfig
from workflow_core.actions.create_task import preview as preview_create_task
from workflow_core.actions.create_ticket import CreateTicketConfig
from workflow_core.actions.create_ticket import preview as preview_create_ticket
from workflow_core.actions.update_task import UpdateTaskConfig
from workflow_core.actions.update_task import preview as preview_update_task
from workflow_core.actions.update_ticket import UpdateTicketConfig, target_id
from workflow_core.actions.update_ticket import preview as preview_update_ticket
from workflow_core.errors import PermanentActionError
from workflow_core.validation import validate_definition
from workflow_core.validation.problems import ValidationResult

TICKET_ID = "0f3c1a52-9a1e-4d7b-8f7e-2b1d7c9e4a10"


def with_action(action_type: str, **config: Any) -> dict[str, Any]:
    """A definition whose only step runs one action of `action_type` with `config`."""
    return definition_dict(step("open", actions=({"type": action_type, "config": config},)))


def errors_at(result: ValidationResult) -> dict[str, str]:
    return {problem.path: problem.msg for problem in result.errors}


def context_with_ticket(**data: Any) -> dict[str, Any]:
    context = example_context(**data)
    context["steps"] = {"open": {"ticket_id": TICKET_ID, "task_id": TICKET_ID}}
    return context


# config validation, as POST /workflows sees it


@pytest.mark.parametrize(
    ("action_type", "config"),
    [
        ("create_ticket", {"subject": "Help {data.name}"}),
        (
            "create_ticket",
            {
                "subject": "s",
                "description": "d",
                "status": "pending",
                "priority": "urgent",
                "assignee": "{data.email}",
                "fields": {"plan": "{data.plan}", "tags": ["a", 1, None]},
            },
        ),
        ("update_ticket", {"ticket_id": "{steps.open.ticket_id}", "status": "resolved"}),
        ("update_ticket", {"ticket_id_path": "steps.open.ticket_id", "fields": {"a": 1}}),
        ("create_task", {"title": "Call {data.name}", "due_in": "P1DT2H"}),
        ("create_task", {"title": "t", "due_in": 3600}),
        ("update_task", {"task_id_path": "steps.open.task_id", "status": "completed"}),
        ("update_task", {"task_id": "{steps.open.task_id}", "due_in": "PT30M"}),
    ],
)
def test_valid_configs_are_accepted(action_type: str, config: dict[str, Any]) -> None:
    result = validate_definition(with_action(action_type, **config))
    assert result.errors == []
    assert result.ok


@pytest.mark.parametrize(
    ("action_type", "config", "path", "words"),
    [
        ("create_ticket", {"subject": "s", "priority": "asap"}, "priority", "'urgent'"),
        ("create_ticket", {"subject": "s", "status": "new"}, "status", "'open'"),
        ("create_ticket", {}, "subject", "required"),
        ("create_ticket", {"subject": ""}, "subject", "at least 1"),
        ("create_ticket", {"subject": "s", "fields": ["a"]}, "fields", "dictionary"),
        ("create_ticket", {"subject": "s", "owner": "x"}, "owner", "not permitted"),
        ("update_ticket", {"status": "open"}, "", "exactly one of `ticket_id`"),
        (
            "update_ticket",
            {"ticket_id": "{steps.open.ticket_id}", "ticket_id_path": "steps.open.ticket_id"},
            "",
            "exactly one of `ticket_id`",
        ),
        ("update_ticket", {"ticket_id": "{steps.open.ticket_id}"}, "", "changes nothing"),
        ("update_ticket", {"ticket_id": "x", "priority": "top"}, "priority", "'urgent'"),
        ("create_task", {"description": "d"}, "title", "required"),
        ("create_task", {"title": "t", "due_in": "tomorrow"}, "due_in", "not a duration"),
        ("create_task", {"title": "t", "due_in": "P1M"}, "due_in", "not a duration"),
        ("create_task", {"title": "t", "status": "completed"}, "status", "not permitted"),
        ("update_task", {"title": "t"}, "", "exactly one of `task_id`"),
        ("update_task", {"task_id": "x", "task_id_path": "y", "title": "t"}, "", "exactly one"),
        ("update_task", {"task_id": "x"}, "", "changes nothing"),
        ("update_task", {"task_id": "x", "status": "timed_out"}, "status", "'cancelled'"),
        ("update_task", {"task_id": "x", "due_in": -5}, "due_in", "negative"),
    ],
)
def test_bad_configs_are_refused_at_their_json_path(
    action_type: str, config: dict[str, Any], path: str, words: str
) -> None:
    expected = "steps[0].actions[0].config" + (f".{path}" if path else "")
    found = errors_at(validate_definition(with_action(action_type, **config)))
    assert expected in found, found
    assert words in found[expected]


def test_a_ticket_id_template_naming_an_unknown_step_is_a_warning() -> None:
    result = validate_definition(
        with_action("update_ticket", ticket_id="{steps.opne.ticket_id}", status="closed")
    )
    assert result.ok
    [warning] = result.warnings
    assert warning.path == "steps[0].actions[0].config.ticket_id"
    assert "'opne'" in warning.msg


# previews: pure, templates rendered


def test_create_ticket_previews_the_rendered_ticket() -> None:
    config = CreateTicketConfig(
        subject="Help for {data.name}\r\nBcc: x",
        description="{data.message}\nfrom {data.email}",
        priority="high",
        assignee="{data.owner}",
        fields={"email": "{data.email}", "nested": {"list": ["{data.name}", 7]}, "flag": True},
    )

    shown = preview_create_ticket(config, example_context(owner="ops@example.com"))

    assert shown == {
        "ticket_id": "dry-run",
        "ticket": {
            "subject": "Help for John Doe Bcc: x",
            "description": "Hello world\nfrom user@example.com",
            "status": "open",
            "priority": "high",
            "assignee": "ops@example.com",
            "fields": {
                "email": "user@example.com",
                "nested": {"list": ["John Doe", 7]},
                "flag": True,
            },
        },
    }


def test_an_assignee_that_renders_empty_is_none() -> None:
    config = CreateTicketConfig(subject="s", assignee="{data.nobody_here}")
    assert preview_create_ticket(config, example_context())["ticket"]["assignee"] == (
        "{data.nobody_here}"
    )
    config = CreateTicketConfig(subject="s", assignee="{data.owner}")
    assert preview_create_ticket(config, example_context(owner=None))["ticket"]["assignee"] is None


def test_create_task_previews_the_rendered_task_with_its_due_in() -> None:
    config = CreateTaskConfig(
        title="Call {data.name}", assignee="{data.email}", due_in="P2D", fields={"n": "{data.n}"}
    )

    shown = preview_create_task(config, example_context(n=3))

    assert shown == {
        "task_id": "dry-run",
        "task": {
            "title": "Call John Doe",
            "description": None,
            "assignee": "user@example.com",
            "fields": {"n": 3},
            "status": "pending",
            "due_in": "P2D",
        },
    }


def test_update_ticket_previews_the_ticket_it_finds_and_the_changes() -> None:
    by_template = UpdateTicketConfig(
        ticket_id="{steps.open.ticket_id}",
        status="resolved",
        subject="Re: {data.name}",
        fields={"resolved_by": "{data.email}"},
    )
    by_path = UpdateTicketConfig(ticket_id_path="steps.open.ticket_id", assignee="")
    context = context_with_ticket()

    assert preview_update_ticket(by_template, context) == {
        "ticket_id": TICKET_ID,
        "changes": {
            "status": "resolved",
            "subject": "Re: John Doe",
            "fields": {"resolved_by": "user@example.com"},
        },
    }
    assert preview_update_ticket(by_path, context) == {
        "ticket_id": TICKET_ID,
        "changes": {"assignee": None},
    }
    assert preview_update_ticket(by_path, example_context())["ticket_id"] is None


def test_update_task_previews_the_task_it_finds_and_the_changes() -> None:
    config = UpdateTaskConfig(
        task_id_path="steps.open.task_id", status="cancelled", due_in="PT1H", title="{data.name}"
    )
    assert preview_update_task(config, context_with_ticket()) == {
        "task_id": TICKET_ID,
        "changes": {"status": "cancelled", "title": "John Doe", "due_in": "PT1H"},
    }


# finding the record to change


def test_the_target_id_comes_from_a_template_or_a_path() -> None:
    context = context_with_ticket()
    assert str(target_id("ticket", "{steps.open.ticket_id}", None, context)) == TICKET_ID
    assert str(target_id("ticket", f" {TICKET_ID} ", None, context)) == TICKET_ID
    assert str(target_id("ticket", None, "steps.open.ticket_id", context)) == TICKET_ID


@pytest.mark.parametrize(
    ("literal", "path", "words"),
    [
        ("{steps.nowhere.ticket_id}", None, "'{steps.nowhere.ticket_id}', which is not a ticket"),
        ("{data.name}", None, "'John Doe', which is not a ticket id (a UUID)"),
        (None, "steps.nowhere.ticket_id", "leads to nothing in the run's context"),
        (None, "data.name", "`ticket_id_path` 'data.name' gave 'John Doe'"),
        (None, "data.count", "gave '3'"),
    ],
)
def test_a_target_the_context_does_not_give_is_a_permanent_error(
    literal: str | None, path: str | None, words: str
) -> None:
    with pytest.raises(PermanentActionError) as raised:
        target_id("ticket", literal, path, context_with_ticket(count=3))
    assert words in raised.value.message
