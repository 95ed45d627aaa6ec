"""A dry run: walk a workflow for a sample form without doing anything. Evaluates the trigger
(and says why it does not match), renders every action as it would be carried out (emails,
webhook requests, tickets), follows the transitions, and stops where a real run would wait
for a person unless the caller says how that task ends. Time is skipped, never waited for.

Pure: it uses the action types' `preview`, which renders and never sends.

Bounded like a real run (engine/limits.py): an email over MAX_RECIPIENTS_PER_EMAIL, or one past
MAX_EMAILS_PER_RUN, fails the dry run with the reason, as it would fail the run. A rendered
field over MAX_RENDERED_BYTES, or an answer that would grow past MAX_DRY_RUN_BYTES, raises
`TooLarge` (the API's 422): the walk stops there, before the text is built.
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
from workflow_core.engine.limits import DEFAULT_LIMITS, Limits
from workflow_core.engine.templates import json_size
from workflow_core.errors import ActionFailed, LimitExceeded, TooLarge
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
    limits: Limits = DEFAULT_LIMITS,
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
    answer = _Answer(limits.dry_run_bytes)
    emails = _Emails(limits.emails_per_run)
    positions = {step.id: index for index, step in enumerate(definition.steps)}
    decision = machine.start(definition)
    while isinstance(decision, machine.RunStep):
        step, seq = decision.step, decision.seq
        loc = ("steps", positions[step.id])
        rendered, results, failure = _preview_actions(step, context, limits, emails, loc)
        context = machine.with_step_results(context, step.id, results)
        entry: dict[str, Any] = {
            "seq": seq,
            "step_id": step.id,
            "type": step.type,
            "actions": rendered,
        }
        report["steps"].append(entry)
        answer.add(entry, loc)
        if failure is not None:
            decision = machine.Fail(failure)
            break
        try:
            decision = machine.after_actions(
                definition,
                step,
                seq,
                context,
                now,
                step_budget,
                rendered_bytes=limits.rendered_bytes,
            )
        except TooLarge as error:
            raise TooLarge(error.message, loc) from None
        if isinstance(decision, machine.OpenTask) and decision.assignee_email:
            refused = emails.refusal()
            if refused is not None:
                entry["error"] = refused
                decision = machine.Fail(f"{step.id} (the assignee's email): {refused}")
                break
        if isinstance(decision, machine.OpenTask):
            entry["task"] = _task_entry(decision, now)
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
    answer.add(context, ("context",))
    report["context"] = context
    return report


class _Answer:
    """The size of the answer so far, as JSON: past `limit` bytes the dry run stops."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def add(self, part: Any, loc: tuple[str | int, ...]) -> None:
        self.used += json_size(part, self.limit - self.used)
        if self.used > self.limit:
            raise TooLarge(
                f"the dry run's answer would be larger than MAX_DRY_RUN_BYTES ({self.limit} "
                "bytes); it was not built",
                loc,
            )


class _Emails:
    """The emails the dry run would send, against MAX_EMAILS_PER_RUN."""

    def __init__(self, allowed: int) -> None:
        self.allowed, self.sent = allowed, 0

    def refusal(self) -> str | None:
        """Count one more email; the reason it would not be sent when past the limit."""
        if self.sent >= self.allowed:
            return (
                f"the run has sent {self.sent} emails; MAX_EMAILS_PER_RUN allows "
                f"{self.allowed}, so this one would not be sent"
            )
        self.sent += 1
        return None


def _preview_actions(
    step: StepSpec,
    context: Mapping[str, Any],
    limits: Limits,
    emails: _Emails,
    step_loc: tuple[str | int, ...],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """Each action's preview (or error), the results later steps see, and the reason the run
    would fail here (a limit), if it would."""
    rendered: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for index, spec in enumerate(step.actions):
        action_type = actions.get(spec.type)
        entry: dict[str, Any] = {"index": index, "type": spec.type}
        rendered.append(entry)
        where = f"{step.id}.actions[{index}] ({spec.type})"
        try:
            if action_type is None:
                raise ActionFailed(f"no action type {spec.type!r}")
            refused = emails.refusal() if action_type.reserves_effect else None
            if refused is not None:
                raise LimitExceeded(refused)
            config = action_type.config.model_validate(spec.config)
            preview = action_type.preview(config, context, limits)
        except TooLarge as error:
            raise TooLarge(f"{where}: {error.message}", (*step_loc, "actions", index)) from None
        except LimitExceeded as error:  # the run would fail here
            entry["error"] = error.message
            return rendered, results, f"{where} failed: {error.message}"
        except (ActionFailed, ValidationError) as error:
            entry["error"] = str(error)
            preview = {}
        else:
            entry["would"] = preview
        results.append(preview)  # stands in for the real result in later steps' context
    return rendered, results, None


def _task_entry(decision: machine.OpenTask, now: datetime) -> dict[str, Any]:
    """The task a human task step would open, as the dry run shows it."""
    task: dict[str, Any] = {
        "title": decision.title,
        "description": decision.description,
        "assignee": decision.assignee,
        "assignee_email": decision.assignee_email,
        "due_at": (now + decision.due_in).isoformat() if decision.due_in else None,
    }
    if decision.outcomes:
        task["outcomes"] = list(decision.outcomes)
    if decision.shown:
        task["fields"] = dict(decision.shown)
    return task
