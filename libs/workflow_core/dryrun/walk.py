"""A dry run: walk a workflow for a sample form (or a sample event, as POST /events takes
it) without doing anything. Evaluates the trigger
(and says why it does not match), renders every action as it would be carried out (emails,
webhook requests, tickets), follows the transitions, and stops where a real run would wait
for a person unless the caller says how that task ends. Time is skipped, never waited for.

Pure: it uses the action types' `preview`, which renders and never sends. A schedule trigger
is walked from its next tick (the sample is not used), and `next_fire_times` lists three.

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
from workflow_core.dryrun.sample import sample_event, schedule_preview, trigger_verdict
from workflow_core.engine import machine, parallel
from workflow_core.engine.context import initial_context, posted_event_context
from workflow_core.engine.gates import gate_of, render_key
from workflow_core.engine.limits import DEFAULT_LIMITS, Limits
from workflow_core.engine.templates import json_size
from workflow_core.errors import ActionFailed, LimitExceeded, TooLarge
from workflow_core.ids import DRY_RUN_ID
from workflow_core.statuses import RunStatus


def dry_run(
    definition: WorkflowDefinition,
    *,
    form: Mapping[str, Any] | None = None,
    posted: Mapping[str, Any] | None = None,
    workflow_org_id: str | None = None,
    workflow_id: str = DRY_RUN_ID,
    task_outcomes: Mapping[str, Mapping[str, Any]] | None = None,
    now: datetime,
    step_budget: int = 100,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Walk `definition` for the sample `form` or the sample `posted` event (one of them)."""
    event = sample_event(definition, form, posted, workflow_org_id, now)
    matched, reason = trigger_verdict(definition, workflow_org_id, event)
    report: dict[str, Any] = {
        "matched": matched,
        "trigger": reason,
        "status": "not started",
        "path": [],
        "steps": [],
        **schedule_preview(definition, now),
    }
    if not matched:
        return report
    context: dict[str, Any] = (
        posted_event_context(event=event, workflow_id=workflow_id, run_id=DRY_RUN_ID)
        if posted is not None
        else initial_context(
            submission=event,
            workflow_id=workflow_id,
            run_id=DRY_RUN_ID,
            event_type=event["event_type"],
        )
    )
    report.update(_gates(definition, context))
    walk = _Walk(definition, report, task_outcomes or {}, now, step_budget, limits)
    decision, context = walk.chain(machine.start(definition), context)
    if decision is None:
        report["status"] = RunStatus.WAITING
    else:
        _settle_status(report, decision, now)
    report["path"] = [entry["step_id"] for entry in report["steps"]]
    walk.answer.add(context, ("context",))
    report["context"] = context
    return report


class _Walk:
    """The steps a dry run goes through, entry by entry into `report`. A parallel step's
    branches are walked one after another (a real run interleaves them; their effects are the
    same); a branch that would wait for a person stops there while the others go on."""

    def __init__(
        self,
        definition: WorkflowDefinition,
        report: dict[str, Any],
        outcomes: Mapping[str, Mapping[str, Any]],
        now: datetime,
        step_budget: int,
        limits: Limits,
    ) -> None:
        self.definition, self.report, self.outcomes = definition, report, outcomes
        self.now, self.budget, self.limits = now, step_budget, limits
        self.answer = _Answer(limits.dry_run_bytes)
        self.emails = _Emails(limits.emails_per_run)
        self.locs = _step_locs(definition)
        self.last_seq = 0

    def chain(
        self, first: machine.Decision, context: dict[str, Any], branch: str | None = None
    ) -> tuple[machine.Decision | None, dict[str, Any]]:
        """Follow the steps from `first` until the end, a failure, or a wait (None)."""
        decision: machine.Decision | None = first
        while isinstance(decision, machine.RunStep):
            self.last_seq = max(self.last_seq, decision.seq)
            if decision.step.type == "parallel":
                decision, context = self.parallel(decision.step, decision.seq, context)
            else:
                decision, context = self.visit(decision.step, decision.seq, context, branch)
        return decision, context

    def parallel(
        self, step: StepSpec, seq: int, context: dict[str, Any]
    ) -> tuple[machine.Decision | None, dict[str, Any]]:
        entry: dict[str, Any] = {"seq": seq, "step_id": step.id, "type": step.type}
        self.report["steps"].append(entry)
        started = parallel.enter(step, seq, context, self.budget)
        if isinstance(started, machine.Fail):
            return started, context
        context, self.last_seq = started, seq + len(step.branches)
        for cursor in parallel.cursors(context, step.id):
            first = machine.RunStep(self.definition.step(cursor.step), cursor.seq)
            ended, context = self.chain(first, context, cursor.branch)
            if isinstance(ended, machine.AwaitEvent):  # says which event, as a run's end would
                _settle_status(self.report, ended, self.now)
                ended = None
            context = (
                parallel.waiting(context, step.id, cursor.branch)
                if ended is None
                else parallel.moved(context, step.id, cursor.branch, ended)
            )
        decision = parallel.outcome(self.definition, step, context, self.last_seq, self.budget)
        status = parallel.FAILED if isinstance(decision, machine.Fail) else parallel.COMPLETED
        if decision is not None:  # a branch that waits is cancelled: nobody waits for it
            context = parallel.closed(context, step.id, status)
            self.report.pop("waiting_for", None)
        entry["branches"] = {
            cursor.branch: cursor.status for cursor in parallel.cursors(context, step.id)
        }
        entry["next"] = decision.step.id if isinstance(decision, machine.RunStep) else None
        self.answer.add(entry, self.locs[step.id])
        return decision, context

    def visit(
        self, step: StepSpec, seq: int, context: dict[str, Any], branch: str | None
    ) -> tuple[machine.Decision | None, dict[str, Any]]:
        """One step: its actions previewed, then what follows it."""
        loc = self.locs[step.id]
        rendered, results, failure = _preview_actions(step, context, self.limits, self.emails, loc)
        context = machine.with_step_results(context, step.id, results)
        entry: dict[str, Any] = {"seq": seq, "step_id": step.id, "type": step.type}
        if branch is not None:
            entry["branch"] = branch
        entry["actions"] = rendered
        self.report["steps"].append(entry)
        self.answer.add(entry, loc)
        if failure is not None:
            return machine.Fail(failure), context
        try:
            decision = machine.after_actions(
                self.definition,
                step,
                seq,
                context,
                self.now,
                self.budget,
                rendered_bytes=self.limits.rendered_bytes,
                last_seq=self.last_seq,
            )
        except TooLarge as error:
            raise TooLarge(error.message, loc) from None
        if isinstance(decision, machine.OpenTask) and decision.assignee_email:
            refused = self.emails.refusal()
            if refused is not None:
                entry["error"] = refused
                return machine.Fail(f"{step.id} (the assignee's email): {refused}"), context
        if isinstance(decision, machine.OpenTask):
            entry["task"] = _task_entry(decision, self.now)
            if step.id not in self.outcomes:
                self.report["waiting_for"] = (
                    f"a person to complete the task of step {step.id!r}; "
                    f"pass task_outcomes.{step.id} to go on"
                )
                return None, context
            settled = {"outcome": None, "data": {}, **self.outcomes[step.id]}
            context = machine.with_task_result(context, settled)
            entry["task"]["completed_with"] = settled
            decision = self._after_wait(step, seq, context)
        elif isinstance(decision, machine.Sleep):
            until = decision.until
            entry["waits_until"] = (
                until if isinstance(until, datetime) else self.now + until
            ).isoformat()
            decision = self._after_wait(step, seq, context)
        entry["next"] = decision.step.id if isinstance(decision, machine.RunStep) else None
        return decision, context

    def _after_wait(self, step: StepSpec, seq: int, context: dict[str, Any]) -> machine.Decision:
        return machine.next_step(
            self.definition, step, seq, context, self.budget, last_seq=self.last_seq
        )


def _step_locs(definition: WorkflowDefinition) -> dict[str, tuple[str | int, ...]]:
    """Each step's path in the definition, a branch's steps included."""
    locs: dict[str, tuple[str | int, ...]] = {}
    for index, step in enumerate(definition.steps):
        locs.setdefault(step.id, ("steps", index))
        for b_index, branch in enumerate(step.branches):
            for s_index, inner in enumerate(branch.steps):
                loc = ("steps", index, "branches", b_index, "steps", s_index)
                locs.setdefault(inner.id, loc)
    return locs


def _settle_status(report: dict[str, Any], decision: machine.Decision, now: datetime) -> None:
    """The report's status where the run stopped: done, failed, or waiting for an event (a
    dry run does not wait for one: it says which, and stops there)."""
    if isinstance(decision, machine.Complete):
        report["status"] = RunStatus.COMPLETED
    elif isinstance(decision, machine.Fail):
        report["status"], report["error"] = RunStatus.FAILED, decision.reason
    elif isinstance(decision, machine.AwaitEvent):
        report["steps"][-1]["waits_for_event"] = _awaited(decision, now)
        report["status"] = RunStatus.WAITING
        report["waiting_for"] = (
            f"an event of type {decision.event_type!r} (step {decision.step.id!r}); a dry run "
            "does not wait for events"
        )


def _awaited(decision: machine.AwaitEvent, now: datetime) -> dict[str, Any]:
    return {
        "event": decision.event_type,
        "match": ({"path": decision.path, "equals": decision.expected} if decision.path else None),
        "timeout_at": (now + decision.timeout).isoformat() if decision.timeout else None,
    }


def _gates(definition: WorkflowDefinition, context: Mapping[str, Any]) -> dict[str, Any]:
    """The run's concurrency and throttle keys as rendered (queues are not looked at: a dry
    run reads nothing stored)."""
    gate, shown = gate_of(definition), dict[str, Any]()
    if definition.concurrency is not None and gate is not None:
        shown["concurrency"] = {
            "key": render_key(definition.concurrency.key, context),
            "limit": gate.concurrency_limit,
        }
    if definition.throttle is not None and gate is not None:
        shown["throttle"] = {
            "key": render_key(definition.throttle.key, context),
            "limit": gate.throttle_limit,
            "per_seconds": gate.per.total_seconds(),
        }
    return shown


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
