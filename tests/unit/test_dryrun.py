"""The dry run walks a definition for a sample form without effects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from tests.support.examples import EXAMPLE_FORM, EXAMPLE_WORKFLOW
from workflow_core.definitions import WorkflowDefinition
from workflow_core.dryrun import dry_run

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _definition(raw: dict[str, Any]) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(raw)


APPROVAL = {
    "trigger": {"type": "form_submitted"},
    "initial_step_id": "review",
    "steps": [
        {
            "id": "review",
            "name": "Review {data.name}",
            "type": "human_task",
            "config": {"assignee": "boss", "due_in": "P1D"},
            "transitions": [
                {
                    "to": "yes",
                    "conditions": {"path": "task.outcome", "op": "==", "value": "approved"},
                },
                {"to": "no"},
            ],
        },
        {"id": "yes", "type": "wait", "config": {"for": "PT1H"}, "transitions": [{"to": "tell"}]},
        {
            "id": "tell",
            "type": "auto_action",
            "actions": [
                {
                    "type": "send_email",
                    "config": {
                        "to_path": "data.email",
                        "subject": "Approved, {data.name}",
                        "body": "{task.data.note}",
                    },
                }
            ],
        },
        {
            "id": "no",
            "type": "auto_action",
            "actions": [
                {
                    "type": "send_email",
                    "config": {"to": "{data.email}", "subject": "Sorry", "body": "no"},
                }
            ],
        },
    ],
}


def test_the_original_example_renders_its_email() -> None:
    report = dry_run(_definition(EXAMPLE_WORKFLOW["definition"]), form=EXAMPLE_FORM, now=NOW)
    assert report["matched"] and report["status"] == "completed"
    assert report["path"] == ["step1"]
    [action] = report["steps"][0]["actions"]
    assert action["type"] == "send_email"
    assert action["would"]["to"] == ["user@example.com"]
    assert action["would"]["subject"] == "Form Submission Confirmation - form_submitted"
    assert "Submission ID: dry-run\n" in action["would"]["body"]


def test_a_trigger_that_does_not_match_says_why() -> None:
    definition = _definition(EXAMPLE_WORKFLOW["definition"])
    other = dry_run(definition, form={**EXAMPLE_FORM, "template_id": "other"}, now=NOW)
    assert not other["matched"] and "conditions do not hold" in other["trigger"]
    assert other["steps"] == []
    wrong_org = dry_run(definition, form=EXAMPLE_FORM, workflow_org_id="org_9", now=NOW)
    assert not wrong_org["matched"] and "org_9" in wrong_org["trigger"]


def test_the_walk_stops_at_a_human_task_unless_told_how_it_ends() -> None:
    definition = _definition(APPROVAL)
    form = {**EXAMPLE_FORM, "data": {"email": "a@b.c", "name": "Ada"}}
    waiting = dry_run(definition, form=form, now=NOW)
    assert waiting["status"] == "waiting" and waiting["path"] == ["review"]
    assert waiting["steps"][0]["task"]["title"] == "Review Ada"
    assert waiting["steps"][0]["task"]["due_at"] == "2026-11-28T12:00:00+00:00"

    approved = dry_run(
        definition,
        form=form,
        now=NOW,
        task_outcomes={"review": {"outcome": "approved", "data": {"note": "ok!"}}},
    )
    assert approved["status"] == "completed"
    assert approved["path"] == ["review", "yes", "tell"]
    assert approved["steps"][1]["waits_until"] == "2026-11-27T13:00:00+00:00"
    assert approved["steps"][2]["actions"][0]["would"]["body"] == "ok!"

    rejected = dry_run(
        definition, form=form, now=NOW, task_outcomes={"review": {"outcome": "rejected"}}
    )
    assert rejected["path"] == ["review", "no"]


def test_a_loop_runs_into_the_step_budget() -> None:
    definition = _definition(
        {
            "trigger": {"type": "form_submitted"},
            "initial_step_id": "a",
            "steps": [{"id": "a", "type": "auto_action", "transitions": [{"to": "a"}]}],
        }
    )
    report = dry_run(definition, form=EXAMPLE_FORM, now=NOW, step_budget=5)
    assert report["status"] == "failed" and "budget" in report["error"]
    assert report["path"] == ["a"] * 5


def test_a_schedule_is_walked_from_its_next_tick() -> None:
    scheduled = _definition(
        {
            "trigger": {"type": "schedule", "cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin"},
            "initial_step_id": "report",
            "steps": [
                {
                    "id": "report",
                    "type": "auto_action",
                    "actions": [
                        {
                            "type": "send_email",
                            "config": {
                                "to": "team@example.com",
                                "subject": "Report for {data.scheduled_for}",
                                "body": "{event_type} {org_id}",
                            },
                        }
                    ],
                }
            ],
        }
    )
    report = dry_run(scheduled, form=EXAMPLE_FORM, workflow_org_id="org_9", now=NOW)
    friday, monday, tuesday = "2026-11-27", "2026-11-30", "2026-12-01"
    assert report["next_fire_times"] == [
        f"{monday}T08:00:00+00:00",
        f"{tuesday}T08:00:00+00:00",
        "2026-12-02T08:00:00+00:00",
    ]
    assert NOW.date().isoformat() == friday  # past nine: the next tick is Monday's
    assert report["matched"] and report["status"] == "completed"
    [email] = report["steps"][0]["actions"]
    assert email["would"]["subject"] == f"Report for {monday}T08:00:00+00:00"
    assert email["would"]["body"] == "schedule org_9"


def test_a_task_shows_its_outcomes_and_the_fields_its_assignee_sees() -> None:
    steps = cast(list[dict[str, Any]], APPROVAL["steps"])
    config = {"outcomes": ["approved", "rejected"], "fields": ["name"]}
    definition = _definition({**APPROVAL, "steps": [{**steps[0], "config": config}, *steps[1:]]})
    form = {**EXAMPLE_FORM, "data": {"email": "a@b.c", "name": "Ada"}}
    task = dry_run(definition, form=form, now=NOW)["steps"][0]["task"]
    assert task["outcomes"] == ["approved", "rejected"]
    assert task["fields"] == {"name": "Ada"}


PAID = {
    "trigger": {
        "type": "order.paid",
        "conditions": {"path": "data.total", "op": ">", "value": 100},
    },
    "initial_step_id": "thank",
    "steps": [
        {
            "id": "thank",
            "type": "auto_action",
            "actions": [
                {
                    "type": "send_email",
                    "config": {
                        "to_path": "data.email",
                        "subject": "Thanks for order {data.order}",
                        "body": "{event_type} for {org_id}",
                    },
                }
            ],
        }
    ],
}
ORDER = {"type": "order.paid", "data": {"email": "ada@example.com", "order": 7, "total": 120}}


def test_an_event_triggered_workflow_is_walked_for_a_sample_event() -> None:
    report = dry_run(_definition(PAID), posted={**ORDER, "org_id": "org_shop"}, now=NOW)
    assert report["matched"] and report["status"] == "completed", report
    email = report["steps"][0]["actions"][0]["would"]
    assert email["to"] == ["ada@example.com"]
    assert email["subject"] == "Thanks for order 7"
    assert email["body"] == "order.paid for org_shop"
    assert report["context"]["data"]["order"] == 7


def test_a_sample_event_says_why_it_starts_nothing() -> None:
    small = {**ORDER, "data": {**ORDER["data"], "total": 5}}  # type: ignore[dict-item]
    report = dry_run(_definition(PAID), posted=small, now=NOW)
    assert (report["matched"], report["status"]) == (False, "not started")
    assert report["trigger"] == "trigger.conditions do not hold for this event"
    other = dry_run(_definition(PAID), posted={**ORDER, "type": "order.refunded"}, now=NOW)
    assert other["trigger"] == "trigger.type is 'order.paid'; this event is 'order.refunded'"
    form = dry_run(_definition(PAID), form=EXAMPLE_FORM, now=NOW)
    assert form["trigger"] == "trigger.type is 'order.paid'; a submission is 'form_submitted'"
