from __future__ import annotations

from typing import Any

import pytest

from tests.unit.factories import (
    cond,
    definition_dict,
    example_definition,
    send_email,
    step,
    transition,
)
from workflow_core.validation import validate_definition
from workflow_core.validation.problems import Problem, ValidationResult

OK = cond("data.x", "==", 1)


def error_paths(result: ValidationResult) -> list[str]:
    return [problem.path for problem in result.errors]


def warning_paths(result: ValidationResult) -> list[str]:
    return [problem.path for problem in result.warnings]


def invalid_at(raw: Any, path: str) -> Problem:
    """Validate `raw`, which must be refused with an error at `path`; that error."""
    result = validate_definition(raw)
    assert result.definition is None
    assert not result.ok
    matching = [problem for problem in result.errors if problem.path == path]
    assert matching, f"no error at {path!r}; errors at {error_paths(result)}"
    return matching[0]


def valid(raw: Any) -> ValidationResult:
    result = validate_definition(raw)
    assert result.errors == []
    assert result.ok
    assert result.definition is not None
    return result


def with_trigger_conditions(conditions: Any) -> dict[str, Any]:
    return definition_dict(trigger={"type": "form_submitted", "conditions": conditions})


def with_transition_conditions(conditions: Any) -> dict[str, Any]:
    return definition_dict(step("a", to=(transition("b", conditions),)), step("b"))


# valid definitions


def test_the_original_example_is_valid_without_warnings() -> None:
    result = valid(example_definition())
    assert result.warnings == []
    assert result.definition is not None
    assert result.definition.initial_step_id == "step1"


def test_a_definition_using_every_feature_is_valid() -> None:
    raw = definition_dict(
        step(
            "notify",
            actions=({**send_email(subject="Hi {data.name}"), "retry": {"max_attempts": 3}},),
            to=(transition("review", {"all": [OK, {"not": {"any": [OK]}}]}),),
        ),
        step(
            "review",
            "human_task",
            config={"title": "Review", "due_in": "P1D", "assignee": "ops"},
            to=("pause",),
        ),
        step("pause", "wait", config={"for": "PT10M"}, to=("reminder",)),
        step("reminder", actions=(send_email(body="{task.outcome} {steps.notify.message_id}"),)),
        trigger={"type": "form_submitted", "conditions": [OK, cond("data.tags", "contains", "x")]},
    )
    assert valid(raw).warnings == []


def test_a_loop_back_to_an_earlier_step_is_valid() -> None:
    valid(definition_dict(step("a", to=("b",)), step("b", to=(transition("a", OK),))))


# steps


def test_a_missing_initial_step_is_named() -> None:
    problem = invalid_at(definition_dict(step("a"), initial="nope"), "initial_step_id")
    assert "nope" in problem.msg


def test_a_transition_to_an_unknown_step_is_named() -> None:
    raw = definition_dict(step("a", to=("b",)), step("b", to=("ghost",)))
    problem = invalid_at(raw, "steps[1].transitions[0].to")
    assert "ghost" in problem.msg


def test_a_duplicate_step_id_is_named_at_the_second_occurrence() -> None:
    result = validate_definition(definition_dict(step("a"), step("a")))
    assert error_paths(result) == ["steps[1].id"]


def test_an_unreachable_step_is_named() -> None:
    raw = definition_dict(step("a", to=("b",)), step("b"), step("island", to=("a",)))
    result = validate_definition(raw)
    assert error_paths(result) == ["steps[2]"]
    assert "island" in result.errors[0].msg


def test_no_steps_is_an_error() -> None:
    invalid_at(
        {"trigger": {"type": "form_submitted"}, "initial_step_id": "a", "steps": []}, "steps"
    )


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"steps": "step1"}, "steps"),
        ({"steps": None}, "steps"),
        ({"initial_step_id": 5}, "initial_step_id"),
        ({"initial_step_id": ""}, "initial_step_id"),
        ({"trigger": "form_submitted"}, "trigger"),
        ({"trigger": {}}, "trigger.type"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_wrong_types_at_the_top_are_named(change: dict[str, Any], path: str) -> None:
    invalid_at({**definition_dict(), **change}, path)


@pytest.mark.parametrize("missing", ["trigger", "initial_step_id", "steps"])
def test_a_missing_top_level_field_is_named(missing: str) -> None:
    raw = definition_dict()
    del raw[missing]
    invalid_at(raw, missing)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"type": "robot"}, "steps[0].type"),
        ({"id": ""}, "steps[0].id"),
        ({"id": 7}, "steps[0].id"),
        ({"actions": "send_email"}, "steps[0].actions"),
        ({"transitions": {"to": "a"}}, "steps[0].transitions"),
        ({"transitions": [{}]}, "steps[0].transitions[0].to"),
        ({"colour": "blue"}, "steps[0].colour"),
        ({"config": {"colour": "blue"}}, "steps[0].config.colour"),
    ],
)
def test_wrong_step_fields_are_named(change: dict[str, Any], path: str) -> None:
    invalid_at(definition_dict({**step("first"), **change}), path)


@pytest.mark.parametrize("raw", [None, [], "definition", 42])
def test_something_that_is_not_an_object_is_refused(raw: Any) -> None:
    invalid_at(raw, "definition")


# actions


def one_action(action: dict[str, Any]) -> dict[str, Any]:
    return definition_dict(step("first", actions=(action,)))


def test_an_unknown_action_type_is_named() -> None:
    problem = invalid_at(one_action({"type": "teleport", "config": {}}), "steps[0].actions[0].type")
    assert "teleport" in problem.msg
    assert "send_email" in problem.msg


def test_an_unknown_config_field_is_named() -> None:
    invalid_at(one_action(send_email(colour="blue")), "steps[0].actions[0].config.colour")


def test_send_email_without_a_recipient_is_an_error_in_its_config() -> None:
    problem = invalid_at(
        one_action({"type": "send_email", "config": {"subject": "Hi", "body": "x"}}),
        "steps[0].actions[0].config",
    )
    assert "to" in problem.msg


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"subject": 5}, "steps[0].actions[0].config.subject"),
        ({"to": 5}, "steps[0].actions[0].config.to"),
        ({"to_path": ["data.email"]}, "steps[0].actions[0].config.to_path"),
    ],
)
def test_a_wrongly_typed_action_config_is_named(config: dict[str, Any], path: str) -> None:
    invalid_at(one_action(send_email(**config)), path)


def test_a_second_action_is_named_by_its_index() -> None:
    raw = definition_dict(step("first", actions=(send_email(), {"type": "nope"})))
    invalid_at(raw, "steps[0].actions[1].type")


def test_a_bad_retry_policy_is_named() -> None:
    action = {**send_email(), "retry": {"max_attempts": 0}}
    invalid_at(one_action(action), "steps[0].actions[0].retry.max_attempts")


# conditions


def test_an_unknown_operator_in_the_trigger_is_named() -> None:
    problem = invalid_at(with_trigger_conditions(cond("x", "~=", 1)), "trigger.conditions.op")
    assert "~=" in problem.msg


def test_an_unknown_operator_in_a_transition_is_named() -> None:
    raw = with_transition_conditions(cond("x", "equals", 1))
    invalid_at(raw, "steps[0].transitions[0].conditions.op")


@pytest.mark.parametrize(
    ("conditions", "path"),
    [
        ({"all": [OK, cond("x", "~=", 1)]}, "trigger.conditions.all[1].op"),
        ({"any": [cond("x", "~=", 1)]}, "trigger.conditions.any[0].op"),
        ({"not": cond("x", "~=", 1)}, "trigger.conditions.not.op"),
        (
            {"not": {"any": [OK, {"all": [cond("x", "~=", 1)]}]}},
            "trigger.conditions.not.any[1].all[0].op",
        ),
        ([OK, cond("x", "~=", 1)], "trigger.conditions[1].op"),
    ],
)
def test_an_unknown_nested_operator_is_named(conditions: Any, path: str) -> None:
    invalid_at(with_trigger_conditions(conditions), path)


def test_an_unknown_nested_operator_in_a_transition_is_named() -> None:
    raw = with_transition_conditions({"any": [OK, {"not": cond("x", "=", 1)}]})
    invalid_at(raw, "steps[0].transitions[0].conditions.any[1].not.op")


@pytest.mark.parametrize(
    ("conditions", "path"),
    [
        ({"op": "==", "value": 1}, "trigger.conditions.path"),
        ({"path": "", "op": "==", "value": 1}, "trigger.conditions.path"),
        ({"path": 5, "op": "==", "value": 1}, "trigger.conditions.path"),
        ({"path": "x", "value": 1}, "trigger.conditions.op"),
        ({"path": "x", "op": "=="}, "trigger.conditions.value"),
        ({**OK, "colour": "blue"}, "trigger.conditions.colour"),
        (cond("x", "in", 5), "trigger.conditions.value"),
        ({"all": OK}, "trigger.conditions.all"),
        ({"any": "x == 1"}, "trigger.conditions.any"),
        ({"not": None}, "trigger.conditions.not"),
        ({"all": [OK], "path": "x"}, "trigger.conditions"),
        ("template_id == 'x'", "trigger.conditions"),
        (42, "trigger.conditions"),
    ],
)
def test_malformed_conditions_are_named(conditions: Any, path: str) -> None:
    invalid_at(with_trigger_conditions(conditions), path)


@pytest.mark.parametrize("value", [["a", "b"], "abc"])
def test_in_takes_a_list_or_a_string(value: Any) -> None:
    valid(with_trigger_conditions(cond("x", "in", value)))


@pytest.mark.parametrize("op", [["=="], {"op": "=="}])
def test_an_unhashable_operator_is_an_error_not_an_exception(op: Any) -> None:
    invalid_at(
        with_trigger_conditions({"path": "x", "op": op, "value": 1}), "trigger.conditions.op"
    )


# step configs


def wait_step(**config: Any) -> dict[str, Any]:
    return definition_dict(step("pause", "wait", config=config))


@pytest.mark.parametrize(
    "config", [{"for": "PT10M"}, {"for": 30}, {"until_path": "data.appointment"}]
)
def test_a_wait_step_with_one_of_for_or_until_path_is_valid(config: dict[str, Any]) -> None:
    valid(wait_step(**config))


@pytest.mark.parametrize("config", [{}, {"for": "PT10M", "until_path": "data.appointment"}])
def test_a_wait_step_needs_exactly_one_of_for_or_until_path(config: dict[str, Any]) -> None:
    invalid_at(wait_step(**config), "steps[0].config")


@pytest.mark.parametrize("duration", ["soon", "P1M", "PT", -5, "P"])
def test_a_bad_wait_duration_is_named(duration: Any) -> None:
    invalid_at(wait_step(**{"for": duration}), "steps[0].config.for")


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"for": "PT1M", "colour": "blue"}, "steps[0].config.colour"),
        ({"until_path": 5}, "steps[0].config.until_path"),
        ({"for": ["PT1M"]}, "steps[0].config.for"),
    ],
)
def test_wrong_wait_config_fields_are_named(config: dict[str, Any], path: str) -> None:
    invalid_at(wait_step(**config), path)


def task_step(**config: Any) -> dict[str, Any]:
    return definition_dict(step("review", "human_task", config=config))


@pytest.mark.parametrize("due_in", ["tomorrow", "P1Y", -60, "PT"])
def test_a_bad_task_deadline_is_named(due_in: Any) -> None:
    invalid_at(task_step(due_in=due_in), "steps[0].config.due_in")


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"colour": "blue"}, "steps[0].config.colour"),
        ({"title": 5}, "steps[0].config.title"),
        ({"assignee": ["a", "b"]}, "steps[0].config.assignee"),
    ],
)
def test_wrong_task_config_fields_are_named(config: dict[str, Any], path: str) -> None:
    invalid_at(task_step(**config), path)


def test_a_task_deadline_too_long_to_represent_is_an_error_not_an_exception() -> None:
    invalid_at(task_step(due_in="P99999999999D"), "steps[0].config.due_in")


def test_a_wait_longer_than_a_datetime_can_reach_is_an_error() -> None:
    invalid_at(wait_step(**{"for": "P3000000D"}), "steps[0].config.for")


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (task_step(due_in=True), "steps[0].config.due_in"),
        (wait_step(**{"for": True}), "steps[0].config.for"),
    ],
)
def test_a_boolean_duration_is_an_error(raw: dict[str, Any], path: str) -> None:
    invalid_at(raw, path)


# problems


def test_a_problem_as_a_dict_carries_its_location_under_a_prefix() -> None:
    raw = definition_dict(step("a", to=("ghost",)))
    problem = invalid_at(raw, "steps[0].transitions[0].to")
    as_dict = problem.as_dict(prefix=("body", "definition"))
    assert as_dict["loc"] == ["body", "definition", "steps", 0, "transitions", 0, "to"]
    assert as_dict["path"] == "steps[0].transitions[0].to"
    assert as_dict["msg"] == problem.msg


# warnings


def warned(body: str, *extra_steps: dict[str, Any]) -> ValidationResult:
    """A valid definition whose email body is `body`; it must still be valid."""
    return valid(
        definition_dict(
            step("first", actions=(send_email(body=body),), to=tuple(s["id"] for s in extra_steps)),
            *extra_steps,
        )
    )


@pytest.mark.parametrize(
    "body", ["Hello {foo}", "Ticket {steps.nope.ticket_id}", "Outcome: {task.outcome}"]
)
def test_a_placeholder_that_can_never_resolve_is_a_warning(body: str) -> None:
    result = warned(body)
    assert warning_paths(result) == ["steps[0].actions[0].config.body"]


@pytest.mark.parametrize(
    "body",
    [
        "Hi {data.anything.at.all}",
        "{submission_id} {template_id} {org_id} {workflow_id} {run_id}",
        "{steps.first.message_id}",
        "no placeholders",
        "{0} is not a placeholder",
    ],
)
def test_a_placeholder_that_may_resolve_is_not_a_warning(body: str) -> None:
    assert warned(body).warnings == []


def test_a_task_placeholder_is_fine_when_a_human_task_step_exists() -> None:
    assert warned("Outcome: {task.outcome}", step("review", "human_task")).warnings == []


def test_a_warning_names_the_placeholder_and_its_exact_location() -> None:
    raw = definition_dict(
        step("first", actions=(send_email(), send_email(to=["ok@example.com", "{nope.email}"])))
    )
    result = valid(raw)
    assert warning_paths(result) == ["steps[0].actions[1].config.to[1]"]
    assert "{nope.email}" in result.warnings[0].msg


def test_a_trigger_type_no_event_has_is_a_warning() -> None:
    result = valid(definition_dict(trigger={"type": "Form Submitted"}))
    assert warning_paths(result) == ["trigger.type"]
    assert "'Form Submitted'" in result.warnings[0].msg and "never run" in result.warnings[0].msg
    assert warning_paths(valid(definition_dict(trigger={"type": "run.resume"}))) == ["trigger.type"]
    assert valid(definition_dict(trigger={"type": "form_submitted"})).warnings == []
    assert valid(definition_dict(trigger={"type": "order.paid"})).warnings == []


def test_a_task_may_list_its_outcomes_and_the_fields_its_assignee_sees() -> None:
    valid(task_step(outcomes=["approved", "rejected"], fields=["item", "address.city"]))


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"outcomes": []}, "steps[0].config.outcomes"),
        ({"outcomes": "approved"}, "steps[0].config.outcomes"),
        ({"outcomes": ["yes", "yes"]}, "steps[0].config.outcomes"),
        ({"outcomes": ["yes", ""]}, "steps[0].config.outcomes[1]"),
        ({"outcomes": ["x" * 41]}, "steps[0].config.outcomes[0]"),
        ({"outcomes": ["a\nb"]}, "steps[0].config.outcomes[0]"),
        ({"outcomes": [1]}, "steps[0].config.outcomes[0]"),
        ({"fields": ["{data.x}"]}, "steps[0].config.fields[0]"),
        ({"fields": "item"}, "steps[0].config.fields"),
    ],
)
def test_bad_outcomes_and_fields_are_named(config: dict[str, Any], path: str) -> None:
    invalid_at(task_step(**config), path)
