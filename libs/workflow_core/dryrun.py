"""A dry run: walk a workflow for a sample form without doing anything. Evaluates the trigger
(and says why it does not match), renders every action as it would be carried out (emails,
webhook requests, tickets), follows the transitions, and stops where a real run would wait
for a person unless the caller says how that task ends. Time is skipped, never waited for.

Pure: it uses the action types' `preview`, which renders and never sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from workflow_core import actions
from workflow_core.definitions import StepSpec, WorkflowDefinition
from workflow_core.engine import machine
from workflow_core.engine.conditions import evaluate
from workflow_core.engine.context import initial_context
from workflow_core.errors import ActionFailed
from workflow_core.ids import DRY_RUN_ID
from workflow_core.statuses import RunStatus


def trigger_verdict(
    definition: WorkflowDefinition, workflow_org_id: str | None, event: Mapping[str, Any]
) -> tuple[bool, str]:
    """Whether the workflow starts for `event`, and why (or why not)."""
    if definition.trigger.type != event.get("event_type"):
        return False, (
            f"trigger.type is {definition.trigger.type!r}; a submission is "
            f"{event.get('event_type')!r}"
        )
    if workflow_org_id is not None and workflow_org_id != event.get("org_id"):
        return False, (
            f"the workflow belongs to organisation {workflow_org_id!r}; the form "
            f"comes from {event.get('org_id')!r}"
        )
    if not evaluate(definition.trigger.conditions, event):
        return False, "trigger.conditions do not hold for this form"
    return True, "the trigger matches"


def dry_run(
    definition: WorkflowDefinition,
    *,
    form: Mapping[str, Any],
    workflow_org_id: str | None = None,
    workflow_id: str = DRY_RUN_ID,
    task_outcomes: Mapping[str, Mapping[str, Any]] | None = None,
    now: datetime,
    step_budget: int = 100,
) -> dict[str, Any]:
    event = {
        **form,
        "event_type": "form_submitted",
        "submission_id": DRY_RUN_ID,
        "submitted_at": now.isoformat(),
    }
    matched, reason = trigger_verdict(definition, workflow_org_id, event)
    report: dict[str, Any] = {
        "matched": matched,
        "trigger": reason,
        "status": "not started",
        "path": [],
        "steps": [],
    }
    if not matched:
        return report
    context: dict[str, Any] = initial_context(
        submission=event, workflow_id=workflow_id, run_id=DRY_RUN_ID
    )
    outcomes = task_outcomes or {}
    decision = machine.start(definition)
    while isinstance(decision, machine.RunStep):
        step, seq = decision.step, decision.seq
        rendered, results = _preview_actions(step, context)
        context = machine.with_step_results(context, step.id, results)
        entry: dict[str, Any] = {
            "seq": seq,
            "step_id": step.id,
            "type": step.type,
            "actions": rendered,
        }
        report["steps"].append(entry)
        decision = machine.after_actions(definition, step, seq, context, now, step_budget)
        if isinstance(decision, machine.OpenTask):
            entry["task"] = {
                "title": decision.title,
                "description": decision.description,
                "assignee": decision.assignee,
                "assignee_email": decision.assignee_email,
                "due_at": (now + decision.due_in).isoformat() if decision.due_in else None,
            }
            if step.id not in outcomes:
                report["status"] = RunStatus.WAITING
                report["waiting_for"] = (
                    f"a person to complete the task of step {step.id!r}; "
                    f"pass task_outcomes.{step.id} to go on"
                )
                break
            settled = {"outcome": None, "data": {}, **outcomes[step.id]}
            context = machine.with_task_result(context, settled)
            entry["task"]["completed_with"] = settled
            decision = machine.next_step(definition, step, seq, context, step_budget)
        elif isinstance(decision, machine.Sleep):
            until = decision.until
            entry["waits_until"] = (
                until if isinstance(until, datetime) else now + until
            ).isoformat()
            decision = machine.next_step(definition, step, seq, context, step_budget)
        entry["next"] = decision.step.id if isinstance(decision, machine.RunStep) else None
    if isinstance(decision, machine.Complete):
        report["status"] = RunStatus.COMPLETED
    elif isinstance(decision, machine.Fail):
        report["status"], report["error"] = RunStatus.FAILED, decision.reason
    report["path"] = [entry["step_id"] for entry in report["steps"]]
    report["context"] = context
    return report


def _preview_actions(
    step: StepSpec, context: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rendered: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for index, spec in enumerate(step.actions):
        action_type = actions.get(spec.type)
        entry: dict[str, Any] = {"index": index, "type": spec.type}
        try:
            if action_type is None:
                raise ActionFailed(f"no action type {spec.type!r}")
            preview = action_type.preview(action_type.config.model_validate(spec.config), context)
        except (ActionFailed, ValidationError) as error:
            entry["error"] = str(error)
            preview = {}
        else:
            entry["would"] = preview
        rendered.append(entry)
        results.append(preview)  # stands in for the real result in later steps' context
    return rendered, results
