"""Events of any type and the wait_for_event step: type names, the step's validation, what the
engine decides when the run begins to wait, and how it goes on after the event or the timeout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from tests.unit.factories import cond, definition, definition_dict, example_context, step
from tests.unit.factories import transition as to
from workflow_core import events
from workflow_core.dryrun import dry_run
from workflow_core.engine import machine
from workflow_core.engine.context import posted_event_context
from workflow_core.persistence.posted_events import document
from workflow_core.validation import validate_definition

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SUBMITTED = "2026-11-30T11:59:00+00:00"


def awaiting(**config: Any) -> dict[str, Any]:
    return {
        "event": "email.confirmed",
        "match": {"path": "data.submission_id", "equals": "{submission_id}"},
        "timeout": "P3D",
        **config,
    }


def flow(config: dict[str, Any] | None = None) -> dict[str, Any]:
    return definition_dict(
        step(
            "confirm",
            "wait_for_event",
            config=config if config is not None else awaiting(),
            to=(
                to("remind", cond("steps.confirm.timed_out", "==", True)),
                to("welcome"),
            ),
        ),
        step("remind"),
        step("welcome"),
    )


def errors_at(raw: dict[str, Any]) -> dict[str, str]:
    return {problem.path: problem.msg for problem in validate_definition(raw).errors}


# type names


@pytest.mark.parametrize("name", ["order.paid", "email.confirmed", "a", "x-1.y_2.z", "signup"])
def test_a_well_formed_type_name_is_accepted(name: str) -> None:
    assert events.event_type_problem(name) is None


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("Order.Paid", "not an event type"),
        ("order..paid", "not an event type"),
        (".order", "not an event type"),
        ("order.", "not an event type"),
        ("order paid", "not an event type"),
        ("", "non-empty"),
        ("a" * 201, "at most 200"),
        ("form_submitted", "reserved"),
        ("run.resume", "reserved"),
    ],
)
def test_a_bad_type_name_is_refused_with_the_reason(name: str, says: str) -> None:
    problem = events.event_type_problem(name)
    assert problem is not None and says in problem


def test_a_posted_event_round_trips_through_the_stream_fields() -> None:
    event = events.posted(uuid4(), "order.paid", "org_1", {"total": 5}, NOW)
    decoded = events.from_fields(event.to_fields())
    assert decoded == event
    assert decoded.type == events.POSTED and decoded.payload["event_type"] == "order.paid"


def test_a_posted_event_without_its_organisation_is_malformed() -> None:
    event = events.posted(uuid4(), "order.paid", "org_1", {}, NOW)
    fields = event.to_fields()
    fields["payload"] = '{"event_type": "order.paid", "data": {}}'
    with pytest.raises(events.MalformedEvent, match="org_id"):
        events.from_fields(fields)


def test_a_trigger_matches_a_posted_event_of_its_type() -> None:
    payload = events.posted(uuid4(), "order.paid", "org_1", {}, NOW).payload
    assert machine.matches_trigger(definition(trigger={"type": "order.paid"}), None, payload)
    assert not machine.matches_trigger(definition(), None, payload)


# validation


def test_the_issue_example_is_valid() -> None:
    result = validate_definition(flow())
    assert result.errors == [] and result.warnings == []


def test_match_and_timeout_are_optional() -> None:
    assert errors_at(flow({"event": "order.paid"})) == {}


@pytest.mark.parametrize(
    ("config", "path", "says"),
    [
        (awaiting(event="Email Confirmed"), "steps[0].config.event", "not an event type"),
        (awaiting(event="form_submitted"), "steps[0].config.event", "reserved"),
        (awaiting(timeout="soon"), "steps[0].config.timeout", "not a duration"),
        (awaiting(match={"path": "payload.x", "equals": "1"}), "steps[0].config.match.path", "in"),
        (awaiting(match={"path": "data.x"}), "steps[0].config.match.equals", "Field required"),
        (awaiting(match={"path": "data.x", "equals": [1]}), "steps[0].config.match.equals", ""),
        (awaiting(until="P1D"), "steps[0].config.until", "Extra inputs"),
        ({"match": None}, "steps[0].config.event", "Field required"),
    ],
)
def test_a_bad_step_is_refused_at_its_path(config: dict[str, Any], path: str, says: str) -> None:
    errors = errors_at(flow(config))
    assert path in errors, errors
    assert says in errors[path]


# the engine: beginning to wait


def context() -> dict[str, Any]:
    return {**example_context(), "submitted_at": SUBMITTED}


def test_the_run_awaits_the_event_with_its_correlation_rendered() -> None:
    parsed = definition(*flow()["steps"])
    decision = machine.after_actions(parsed, parsed.step("confirm"), 4, context(), NOW, 100)
    assert decision == machine.AwaitEvent(
        step=parsed.step("confirm"),
        seq=4,
        event_type="email.confirmed",
        path="data.submission_id",
        expected=example_context()["submission_id"],
        since=datetime(2026, 11, 30, 11, 59, tzinfo=UTC),
        timeout=timedelta(days=3),
    )


@pytest.mark.parametrize(("equals", "text"), [(5, "5"), (1.5, "1.5"), (True, "true")])
def test_a_literal_is_matched_as_json_writes_it(equals: Any, text: str) -> None:
    config = awaiting(match={"path": "data.n", "equals": equals}, timeout=None)
    parsed = definition(*flow(config)["steps"])
    decision = machine.after_actions(parsed, parsed.step("confirm"), 1, context(), NOW, 100)
    assert isinstance(decision, machine.AwaitEvent)
    assert decision.expected == text and decision.timeout is None


def test_without_match_any_event_of_the_type_will_do() -> None:
    parsed = definition(*flow({"event": "order.paid"})["steps"])
    decision = machine.after_actions(parsed, parsed.step("confirm"), 1, context(), NOW, 100)
    assert isinstance(decision, machine.AwaitEvent)
    assert (decision.path, decision.expected, decision.timeout) == (None, None, None)


def test_a_run_started_by_an_event_looks_back_to_when_that_event_was_received() -> None:
    payload = events.posted(uuid4(), "signup", "org_1", {"submission_id": "s1"}, NOW).payload
    started = posted_event_context(event=payload, workflow_id="w", run_id="r")
    config = awaiting(match={"path": "data.submission_id", "equals": "{data.submission_id}"})
    parsed = definition(*flow(config)["steps"])
    decision = machine.after_actions(parsed, parsed.step("confirm"), 1, started, NOW, 100)
    assert isinstance(decision, machine.AwaitEvent)
    assert decision.since == NOW and decision.expected == "s1"
    assert started["event_type"] == "signup" and "submission_id" not in started


# the engine: going on


def test_after_the_event_the_step_holds_it_and_the_first_transition_is_taken() -> None:
    parsed = definition(*flow()["steps"])
    event = document(events.posted(uuid4(), "email.confirmed", "org_1", {"ok": 1}, NOW).payload)
    resumed = machine.with_event_result(context(), "confirm", event)
    assert resumed["steps"]["confirm"] == {"event": event, "timed_out": False}
    decision = machine.next_step(parsed, parsed.step("confirm"), 1, resumed, 100)
    assert decision == machine.RunStep(parsed.step("welcome"), 2)


def test_after_the_timeout_the_step_says_so() -> None:
    parsed = definition(*flow()["steps"])
    resumed = machine.with_event_result(context(), "confirm", None)
    assert resumed["steps"]["confirm"] == {"event": None, "timed_out": True}
    decision = machine.next_step(parsed, parsed.step("confirm"), 1, resumed, 100)
    assert decision == machine.RunStep(parsed.step("remind"), 2)


def test_the_event_joins_what_the_steps_actions_returned() -> None:
    before = machine.with_step_results(context(), "confirm", [{"ticket_id": "t1"}])
    resumed = machine.with_event_result(before, "confirm", None)
    assert resumed["steps"]["confirm"]["ticket_id"] == "t1"
    assert resumed["steps"]["confirm"]["timed_out"] is True


def test_the_dry_run_reports_the_wait() -> None:
    parsed = definition(*flow()["steps"])
    form = {"template_id": "t", "org_id": "org_1", "data": {}}
    report = dry_run(parsed, form=form, now=NOW)
    assert report["status"] == "waiting" and report["path"] == ["confirm"]
    assert "email.confirmed" in report["waiting_for"]
    assert report["steps"][0]["waits_for_event"] == {
        "event": "email.confirmed",
        "match": {"path": "data.submission_id", "equals": "dry-run"},
        "timeout_at": (NOW + timedelta(days=3)).isoformat(),
    }
