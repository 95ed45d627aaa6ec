"""Parallel steps, pure: their validation, and the engine's join (`all`, `any`), failure,
round robin and step budget."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.unit.factories import definition_dict, example_context, send_email, step
from workflow_core.definitions.models import WorkflowDefinition
from workflow_core.dryrun import dry_run
from workflow_core.engine import machine, parallel
from workflow_core.validation import validate_definition

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def branch(branch_id: str, *steps: dict[str, Any]) -> dict[str, Any]:
    return {"id": branch_id, "steps": list(steps)}


def parallel_step(*branches: dict[str, Any], join: str = "all", **fields: Any) -> dict[str, Any]:
    return {**step("checks", "parallel", **fields), "join": join, "branches": list(branches)}


def two_branches(join: str = "all") -> dict[str, Any]:
    return definition_dict(
        parallel_step(
            branch("a", step("a1", to=("a2",)), step("a2")),
            branch("b", step("b1", actions=(send_email(),))),
            join=join,
            to=("done",),
        ),
        step("done"),
    )


def errors(raw: dict[str, Any]) -> dict[str, str]:
    result = validate_definition(raw)
    assert result.definition is None
    return {problem.path: problem.msg for problem in result.errors}


# validation


def test_a_parallel_step_with_chained_branches_is_valid() -> None:
    result = validate_definition(two_branches())
    assert result.errors == [] and result.warnings == []
    assert result.definition is not None
    assert result.definition.step("a2").id == "a2"  # branch steps are found by id


def test_a_transition_may_not_leave_its_branch() -> None:
    raw = two_branches()
    raw["steps"][0]["branches"][0]["steps"][1]["transitions"] = [{"to": "b1"}]
    raw["steps"][0]["branches"][0]["steps"].append(step("a3", to=("done",)))
    raw["steps"][0]["branches"][0]["steps"][1]["transitions"].append({"to": "a3"})
    found = errors(raw)
    assert "branch 'b'" in found["steps[0].branches[0].steps[1].transitions[0].to"]
    assert "a top-level step" in found["steps[0].branches[0].steps[2].transitions[0].to"]


def test_a_top_level_step_may_not_jump_into_a_branch() -> None:
    raw = two_branches()
    raw["steps"][1]["transitions"] = [{"to": "a2"}]
    assert "inside branch 'a'" in errors(raw)["steps[1].transitions[0].to"]
    raw = two_branches()
    raw["initial_step_id"] = "a1"
    assert "top-level" in errors(raw)["initial_step_id"]


def test_empty_branches_nesting_and_actions_are_refused() -> None:
    raw = definition_dict(
        parallel_step(
            branch("a"),
            branch("a", parallel_step(branch("x", step("x1"))) | {"id": "inner"}),
            actions=(send_email(),),
        )
    )
    found = errors(raw)
    assert found["steps[0].branches[0].steps"] == "a branch needs at least one step"
    assert "duplicate branch id" in found["steps[0].branches[1].id"]
    assert "no nesting" in found["steps[0].branches[1].steps[0].type"]
    assert "no actions of its own" in found["steps[0].actions"]
    no_branch = errors(definition_dict(parallel_step()))
    assert no_branch["steps[0].branches"] == "a parallel step needs at least one branch"


def test_branches_and_join_belong_to_parallel_steps_only() -> None:
    raw = definition_dict({**step("x"), "join": "any", "branches": [branch("a", step("a1"))]})
    found = errors(raw)
    assert set(found) >= {"steps[0].branches", "steps[0].join"}


def test_step_ids_are_unique_across_branches() -> None:
    raw = two_branches()
    raw["steps"][0]["branches"][1]["steps"][0]["id"] = "a1"
    assert "duplicate step id 'a1'" in errors(raw)["steps[0].branches[1].steps[0].id"]


def test_an_unreachable_branch_step_is_named() -> None:
    raw = two_branches()
    raw["steps"][0]["branches"][1]["steps"].append(step("b9"))
    assert "first step of branch 'b'" in errors(raw)["steps[0].branches[1].steps[1]"]


def test_an_unknown_join_is_refused_with_its_path() -> None:
    raw = two_branches(join="most")
    assert "steps.0.join" in [".".join(map(str, p.loc)) for p in validate_definition(raw).errors]


# the engine


def flow(join: str = "all") -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(two_branches(join))


def entered(definition: WorkflowDefinition, budget: int = 100) -> dict[str, Any]:
    context = parallel.enter(definition.step("checks"), 1, example_context(), budget)
    assert isinstance(context, dict)
    return context


def test_entering_starts_every_branch_with_its_own_visit() -> None:
    context = entered(flow())
    assert context["steps"]["checks"] == {
        "seq": 1,
        "join": "all",
        "status": "running",
        "branches": {
            "a": {"status": "running", "step": "a1", "seq": 2},
            "b": {"status": "running", "step": "b1", "seq": 3},
        },
    }
    assert parallel.is_open(context, flow().step("checks"), 1)
    assert not parallel.is_open(context, flow().step("checks"), 4)


def test_branches_take_turns_oldest_visit_first() -> None:
    definition = flow()
    context = entered(definition)
    first = parallel.next_branch(context, "checks")
    assert first is not None and first.branch == "a"
    step_two = machine.after_actions(
        definition, definition.step("a1"), 2, context, NOW, 100, last_seq=3
    )
    assert step_two == machine.RunStep(definition.step("a2"), 4)
    context = parallel.moved(context, "checks", "a", step_two)
    after = parallel.next_branch(context, "checks")
    assert after is not None and (after.branch, after.seq) == ("b", 3)


def test_join_all_waits_for_every_branch() -> None:
    definition = flow()
    checks = definition.step("checks")
    context = parallel.moved(entered(definition), "checks", "b", machine.Complete())
    assert parallel.outcome(definition, checks, context, 3, 100) is None
    context = parallel.moved(context, "checks", "a", machine.Complete())
    assert parallel.outcome(definition, checks, context, 5, 100) == machine.RunStep(
        definition.step("done"), 6
    )


def test_join_any_goes_on_with_the_first_and_cancels_the_rest() -> None:
    definition = flow("any")
    checks = definition.step("checks")
    context = entered(definition)
    waiting = machine.Sleep(definition.step("a1"), 2, NOW)
    context = parallel.moved(context, "checks", "a", waiting)
    assert parallel.waiting_at(context, "checks", 2) is not None
    assert parallel.outcome(definition, checks, context, 3, 100) is None
    context = parallel.moved(context, "checks", "b", machine.Complete())
    assert parallel.outcome(definition, checks, context, 3, 100) == machine.RunStep(
        definition.step("done"), 4
    )
    assert parallel.open_visits(context, "checks") == [2]
    closed = parallel.closed(context, "checks", parallel.COMPLETED)["steps"]["checks"]
    assert closed["status"] == "completed"
    assert closed["branches"]["a"]["status"] == "cancelled"
    assert closed["branches"]["b"]["status"] == "completed"


@pytest.mark.parametrize("join", ["all", "any"])
def test_a_failed_branch_fails_the_step_whatever_the_join(join: str) -> None:
    definition = flow(join)
    context = parallel.moved(entered(definition), "checks", "a", machine.Fail("boom"))
    decision = parallel.outcome(definition, definition.step("checks"), context, 3, 100)
    assert decision == machine.Fail("parallel step 'checks', branch 'a': boom")


def test_the_step_budget_counts_every_branch_step() -> None:
    definition = flow()
    refused = parallel.enter(definition.step("checks"), 2, example_context(), 3)
    assert isinstance(refused, machine.Fail) and "limit 3" in refused.reason
    # branch a's second step would be the run's 4th visit: over a budget of 3
    decision = machine.after_actions(
        definition, definition.step("a1"), 2, entered(definition, 3), NOW, 3, last_seq=3
    )
    assert isinstance(decision, machine.Fail) and "entered 3 steps (limit 3)" in decision.reason


# the dry run


def test_the_dry_run_walks_every_branch_then_the_join() -> None:
    raw = two_branches()
    raw["steps"][0]["branches"][0]["steps"][0] = step("a1", "human_task", to=("a2",))
    report = dry_run(
        WorkflowDefinition.model_validate(raw),
        form={"template_id": "t", "org_id": "o", "data": {}},
        now=NOW,
    )
    assert report["status"] == "waiting" and "task_outcomes.a1" in report["waiting_for"]
    assert report["path"] == ["checks", "a1", "b1"]
    assert report["steps"][0]["branches"] == {"a": "waiting", "b": "completed"}
    assert report["steps"][2]["branch"] == "b"

    done = dry_run(
        WorkflowDefinition.model_validate(raw),
        form={"template_id": "t", "org_id": "o", "data": {}},
        now=NOW,
        task_outcomes={"a1": {"outcome": "ok"}},
    )
    assert done["status"] == "completed" and "waiting_for" not in done
    assert done["path"] == ["checks", "a1", "a2", "b1", "done"]
    assert [entry["seq"] for entry in done["steps"]] == [1, 2, 4, 3, 5]
    assert done["steps"][0]["next"] == "done"


def test_the_dry_run_of_join_any_goes_on_past_a_waiting_branch() -> None:
    raw = two_branches("any")
    raw["steps"][0]["branches"][0]["steps"][0] = step("a1", "human_task", to=("a2",))
    report = dry_run(
        WorkflowDefinition.model_validate(raw),
        form={"template_id": "t", "org_id": "o", "data": {}},
        now=NOW,
    )
    assert report["status"] == "completed" and "waiting_for" not in report
    assert report["steps"][0]["branches"] == {"a": "cancelled", "b": "completed"}
    assert report["context"]["steps"]["checks"]["status"] == "completed"


def test_the_dry_run_says_which_event_a_branch_would_wait_for() -> None:
    raw = two_branches()
    raw["steps"][0]["branches"][0]["steps"][0] = step(
        "a1", "wait_for_event", to=("a2",), config={"event": "email.confirmed"}
    )
    report = dry_run(
        WorkflowDefinition.model_validate(raw),
        form={"template_id": "t", "org_id": "o", "data": {}},
        now=NOW,
    )
    assert report["status"] == "waiting" and "'email.confirmed'" in report["waiting_for"]
    assert report["steps"][1]["waits_for_event"]["event"] == "email.confirmed"
    assert report["steps"][0]["branches"] == {"a": "waiting", "b": "completed"}
    raw["steps"][0]["join"] = "any"
    report = dry_run(
        WorkflowDefinition.model_validate(raw),
        form={"template_id": "t", "org_id": "o", "data": {}},
        now=NOW,
    )
    assert report["status"] == "completed" and "waiting_for" not in report
