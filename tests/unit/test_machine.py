from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.unit.factories import cond, definition, example_context, step, transition
from workflow_core.definitions.models import WorkflowDefinition
from workflow_core.engine import machine
from workflow_core.engine.machine import SHOWN_CHARACTERS, Complete, Fail, OpenTask, RunStep, Sleep

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BUDGET = 100


def after(
    flow: WorkflowDefinition,
    step_id: str,
    context: dict[str, Any] | None = None,
    *,
    seq: int = 1,
    budget: int = BUDGET,
) -> machine.Decision:
    return machine.after_actions(
        flow, flow.step(step_id), seq, context or example_context(), NOW, budget
    )


def event(**overrides: Any) -> dict[str, Any]:
    return {**example_context(), "event_type": "form_submitted", **overrides}


# start and triggers


def test_start_enters_the_initial_step_as_visit_one() -> None:
    flow = definition(step("other"), step("begin", to=("other",)), initial="begin")
    assert machine.start(flow) == RunStep(flow.step("begin"), 1)


@pytest.mark.parametrize("org_id", ["org_123", "org_456"])
def test_a_workflow_without_org_matches_every_organisation(org_id: str) -> None:
    assert machine.matches_trigger(definition(), None, event(org_id=org_id))


def test_a_workflow_with_an_org_matches_only_that_organisation() -> None:
    assert machine.matches_trigger(definition(), "org_123", event(org_id="org_123"))
    assert not machine.matches_trigger(definition(), "org_123", event(org_id="org_456"))


def test_the_trigger_type_must_equal_the_event_type() -> None:
    flow = definition(trigger={"type": "ticket_closed"})
    assert not machine.matches_trigger(flow, None, event())
    assert machine.matches_trigger(flow, None, event(event_type="ticket_closed"))


def test_an_event_without_a_type_matches_nothing() -> None:
    context = event()
    del context["event_type"]
    assert not machine.matches_trigger(definition(), None, context)


def test_the_trigger_conditions_must_hold() -> None:
    flow = definition(
        trigger={"type": "form_submitted", "conditions": cond("template_id", "==", "contact")}
    )
    assert machine.matches_trigger(flow, None, event(template_id="contact"))
    assert not machine.matches_trigger(flow, None, event(template_id="survey"))


def test_org_scoping_applies_even_when_the_conditions_hold() -> None:
    flow = definition(
        trigger={"type": "form_submitted", "conditions": cond("template_id", "==", "contact")}
    )
    assert not machine.matches_trigger(flow, "org_1", event(template_id="contact", org_id="org_2"))


# auto_action steps and transitions


def routed() -> WorkflowDefinition:
    return definition(
        step(
            "triage",
            to=(
                transition("vip", cond("data.tier", "==", "gold")),
                transition("big", cond("data.amount", ">", 1000)),
                transition("rest"),
            ),
        ),
        step("vip"),
        step("big"),
        step("rest"),
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"tier": "gold", "amount": 5000}, "vip"),
        ({"tier": "silver", "amount": 5000}, "big"),
        ({"tier": "silver", "amount": 10}, "rest"),
        ({}, "rest"),
    ],
)
def test_the_first_transition_that_holds_wins(data: dict[str, Any], expected: str) -> None:
    flow = routed()
    assert after(flow, "triage", example_context(**data), seq=3) == RunStep(flow.step(expected), 4)


def test_no_transition_holds_completes_the_run() -> None:
    flow = definition(step("a", to=(transition("b", cond("data.go", "==", True)),)), step("b"))
    assert after(flow, "a", example_context(go=False)) == Complete()


def test_a_step_without_transitions_completes_the_run() -> None:
    assert after(definition(step("only")), "only") == Complete()


def test_the_step_budget_ends_a_loop_with_a_failure_naming_the_budget() -> None:
    flow = definition(step("loop", to=("loop",)))
    decision = after(flow, "loop", seq=5, budget=5)
    assert isinstance(decision, Fail)
    assert "budget" in decision.reason
    assert "5" in decision.reason


def test_the_last_step_within_the_budget_is_entered() -> None:
    flow = definition(step("loop", to=("loop",)))
    assert after(flow, "loop", seq=4, budget=5) == RunStep(flow.step("loop"), 5)


def test_a_run_that_ends_on_its_last_allowed_step_completes() -> None:
    assert after(definition(step("only")), "only", seq=5, budget=5) == Complete()


# human tasks


def review_flow(**config: Any) -> WorkflowDefinition:
    return definition(
        step("review", "human_task", name="Review {data.name}", config=config, to=("done",)),
        step("done"),
    )


def test_a_human_task_step_opens_a_task_from_its_config() -> None:
    flow = review_flow(
        title="Approve {data.name}",
        description="Amount: {data.amount}",
        assignee="team-{data.team}",
        assignee_email="{data.manager}",
        due_in="PT2H",
    )
    context = example_context(amount=250, team="sales", manager="boss@example.com")
    assert after(flow, "review", context, seq=2) == OpenTask(
        step=flow.step("review"),
        seq=2,
        title="Approve John Doe",
        description="Amount: 250",
        assignee="team-sales",
        assignee_email="boss@example.com",
        due_in=timedelta(hours=2),
    )


def test_a_task_due_in_seconds() -> None:
    decision = after(review_flow(due_in=90), "review")
    assert isinstance(decision, OpenTask)
    assert decision.due_in == timedelta(seconds=90)  # counted by the database when stored


def test_a_task_without_config_is_titled_by_the_step_and_has_no_deadline() -> None:
    decision = after(review_flow(), "review")
    assert isinstance(decision, OpenTask)
    assert decision.title == "Review John Doe"
    assert decision.due_in is None
    assert decision.assignee is None
    assert decision.assignee_email is None
    assert decision.description is None


def test_a_task_without_title_or_name_is_titled_by_the_step_id() -> None:
    flow = definition(step("approve_refund", "human_task"))
    decision = after(flow, "approve_refund")
    assert isinstance(decision, OpenTask)
    assert decision.title == "approve_refund"


def test_a_task_title_and_assignee_email_carry_no_line_breaks_from_user_data() -> None:
    flow = review_flow(title="Review {data.name}", assignee_email="{data.manager}")
    context = example_context(name="x\r\nInjected: yes", manager="a@example.com\nBcc: evil@x")
    decision = after(flow, "review", context)
    assert isinstance(decision, OpenTask)
    assert decision.assignee_email is not None
    for text in (decision.title, decision.assignee_email):
        assert "\r" not in text
        assert "\n" not in text


def test_after_a_task_its_outcome_routes_the_run() -> None:
    flow = definition(
        step(
            "review",
            "human_task",
            to=(transition("approved", cond("task.outcome", "==", "approve")), "rejected"),
        ),
        step("approved"),
        step("rejected"),
    )
    context = machine.with_task_result(example_context(), {"outcome": "approve", "data": {}})
    decision = machine.next_step(flow, flow.step("review"), 2, context, BUDGET)
    assert decision == RunStep(flow.step("approved"), 3)


# wait steps


def wait_flow(**config: Any) -> WorkflowDefinition:
    return definition(step("pause", "wait", config=config, to=("next",)), step("next"))


@pytest.mark.parametrize(
    ("duration", "delta"), [("PT10M", timedelta(minutes=10)), (30, timedelta(seconds=30))]
)
def test_a_wait_for_a_duration_sleeps_for_it(duration: Any, delta: timedelta) -> None:
    """A duration stays one: the timer's due time is counted by the database's clock."""
    flow = wait_flow(**{"for": duration})
    assert after(flow, "pause", seq=3) == Sleep(flow.step("pause"), 3, delta)


def test_a_wait_until_a_future_timestamp_sleeps_until_it() -> None:
    flow = wait_flow(until_path="data.appointment")
    context = example_context(appointment="2024-05-02T09:30:00Z")
    assert after(flow, "pause", context) == Sleep(
        flow.step("pause"), 1, datetime(2024, 5, 2, 9, 30, tzinfo=UTC)
    )


def test_a_wait_until_a_past_timestamp_goes_on_at_once() -> None:
    flow = wait_flow(until_path="data.appointment")
    context = example_context(appointment="2024-04-30T09:30:00Z")
    assert after(flow, "pause", context, seq=2) == RunStep(flow.step("next"), 3)


def test_a_wait_until_an_epoch_timestamp() -> None:
    flow = wait_flow(until_path="data.at")
    until = NOW + timedelta(hours=1)
    decision = after(flow, "pause", example_context(at=until.timestamp()))
    assert decision == Sleep(flow.step("pause"), 1, until)


@pytest.mark.parametrize("data", [{}, {"appointment": "someday"}, {"appointment": None}])
def test_a_wait_until_a_path_without_a_timestamp_fails_naming_the_path(
    data: dict[str, Any],
) -> None:
    flow = wait_flow(until_path="data.appointment")
    decision = after(flow, "pause", example_context(**data))
    assert isinstance(decision, Fail)
    assert "data.appointment" in decision.reason


def test_after_a_wait_the_run_takes_the_next_step() -> None:
    flow = wait_flow(**{"for": "PT1M"})
    decision = machine.next_step(flow, flow.step("pause"), 4, example_context(), BUDGET)
    assert decision == RunStep(flow.step("next"), 5)


# context updates


def test_step_results_are_merged_under_the_step_id_with_the_list_under_actions() -> None:
    results = [{"message_id": "<1@x>", "status": "sent"}, {"ticket_id": "T-1", "status": "open"}]
    context = machine.with_step_results(example_context(), "notify", results)
    assert context["steps"]["notify"] == {
        "message_id": "<1@x>",
        "ticket_id": "T-1",
        "status": "open",
        "actions": results,
    }


def test_step_results_keep_earlier_steps_and_the_rest_of_the_context() -> None:
    first = machine.with_step_results(example_context(), "a", [{"x": 1}])
    second = machine.with_step_results(first, "b", [{"y": 2}])
    assert second["steps"]["a"]["x"] == 1
    assert second["steps"]["b"]["y"] == 2
    assert second["data"] == example_context()["data"]


def test_context_updates_do_not_change_the_context_they_start_from() -> None:
    original = example_context()
    machine.with_step_results(original, "a", [{"x": 1}])
    machine.with_task_result(original, {"outcome": "approve"})
    assert original == example_context()


def test_a_task_result_is_set_under_task() -> None:
    context = machine.with_task_result(
        example_context(), {"outcome": "approve", "data": {"note": "ok"}}
    )
    assert context["task"] == {"outcome": "approve", "data": {"note": "ok"}}
    assert context["submission_id"] == example_context()["submission_id"]


@pytest.mark.parametrize(
    "value", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", 1e20, "2999-01-01T00:00Z"]
)
def test_a_wait_until_a_time_out_of_range_fails_the_run_naming_the_path(value: Any) -> None:
    """Such a value raised OverflowError inside the engine, and the whole event was
    redelivered and dead-lettered; now it is this run's failure, with the reason."""
    flow = wait_flow(until_path="data.appointment")
    decision = after(flow, "pause", example_context(appointment=value))
    assert isinstance(decision, Fail)
    assert "data.appointment" in decision.reason


def test_a_task_carries_its_outcomes_and_the_form_fields_its_assignee_sees() -> None:
    flow = review_flow(outcomes=["approved", "rejected"], fields=["amount", "tags", "missing"])
    context = example_context(amount=250, tags=["a", "b"])
    decision = after(flow, "review", context)
    assert isinstance(decision, OpenTask)
    assert decision.outcomes == ("approved", "rejected")
    assert decision.shown == (("amount", "250"), ("tags", '["a","b"]'), ("missing", ""))


def test_a_shown_field_is_cut_short() -> None:
    decision = after(review_flow(fields=["text"]), "review", example_context(text="x" * 10_000))
    assert isinstance(decision, OpenTask)
    assert decision.shown == (("text", "x" * SHOWN_CHARACTERS),)
