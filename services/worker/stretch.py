"""A stretch of a run: from where it begins (a new run's first step, a retried action, the step
after a wait) to where it must stop and be recorded (a wait for a task, a timer or a retry; the
end). The engine decides each next move; this carries it out and keeps the journal.

Every action is keyed by (run, step visit, action index); an effect already recorded as done is
not performed again, so a redelivered event repeats nothing. An email counts as sent once its
server said 250, and the effect ledger records it at once (persistence/effects.py).

The limits (engine/limits.py) go with every action: the emails a run has sent are counted from
its ledger, which a stretch has at hand (loaded with the run, kept up to date as it goes), so
MAX_EMAILS_PER_RUN costs no round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from services.worker.execution import Failed, Retry, execute_action
from services.worker.notify import LinkMaker, assignee_email
from services.worker.store import RunStore
from workflow_core.actions.base import ActionCall, ActionDeps
from workflow_core.definitions import StepSpec, WorkflowDefinition
from workflow_core.definitions.models import RetryPolicy
from workflow_core.engine import machine
from workflow_core.engine.limits import DEFAULT_LIMITS, Limits
from workflow_core.errors import LimitExceeded
from workflow_core.ids import effect_key
from workflow_core.log import get_logger
from workflow_core.persistence import effects
from workflow_core.persistence.effects import DbEffectLedger
from workflow_core.persistence.journal import Journal
from workflow_core.persistence.runs import RunRecord
from workflow_core.statuses import RunStatus, TaskStatus

log = get_logger(__name__)

Ledger = dict[str, effects.EffectState]


@dataclass(frozen=True, slots=True)
class Resumption:
    """Where a stretch begins: the decision, and for a retried step the first action to run
    and its attempt number."""

    decision: machine.Decision
    first_action: int = 0
    attempt: int = 1


class Stretches:
    """Drives runs from one resting point to the next."""

    def __init__(
        self,
        store: RunStore,
        deps: ActionDeps,
        ledger: DbEffectLedger,
        *,
        step_budget: int,
        retry_policy: RetryPolicy,
        now: Callable[[], datetime],
        links: LinkMaker,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._store, self._deps, self._ledger = store, deps, ledger
        self._budget, self._retry_policy, self._now = step_budget, retry_policy, now
        self._limits, self._links = limits, links

    async def drive(
        self,
        run: RunRecord,
        definition: WorkflowDefinition,
        resumption: Resumption,
        ledger: Ledger,
        journal: Journal | None = None,
    ) -> RunRecord:
        journal = journal or Journal()
        decision = resumption.decision
        first_action, attempt = resumption.first_action, resumption.attempt
        while isinstance(decision, machine.RunStep):
            step, seq, now = decision.step, decision.seq, self._now()
            run = replace(run, status=RunStatus.RUNNING, current_step_id=step.id, step_seq=seq)
            if first_action == 0 and attempt == 1:
                journal.step_entered(run.id, seq, step, now)
            outcome = await self._run_actions(run, step, ledger, journal, first_action, attempt)
            await self._ledger.release_held(run.id)
            first_action, attempt = 0, 1
            if isinstance(outcome, Retry):  # its timer is in the journal
                return await self._store.checkpoint(replace(run, status=RunStatus.WAITING), journal)
            if isinstance(outcome, Failed):
                journal.step_failed(run.id, seq, step, now, self._now(), outcome.reason)
                decision = machine.Fail(outcome.reason)
                break
            run = replace(run, context=machine.with_step_results(run.context, step.id, outcome))
            decision = self._after_actions(definition, step, seq, run)
            journal.step_left(run.id, seq, step, decision, now, self._now())
            if isinstance(decision, machine.RunStep):
                run = await self._store.checkpoint(run, journal)  # progress survives a crash
        return await self._rest(run, decision, journal)

    def _after_actions(
        self, definition: WorkflowDefinition, step: StepSpec, seq: int, run: RunRecord
    ) -> machine.Decision:
        try:
            return machine.after_actions(
                definition,
                step,
                seq,
                run.context,
                self._now(),
                self._budget,
                rendered_bytes=self._limits.rendered_bytes,
            )
        except LimitExceeded as error:  # a human task's text over MAX_RENDERED_BYTES
            return machine.Fail(f"{step.id}: {error.message}")

    async def _rest(
        self, run: RunRecord, decision: machine.Decision, journal: Journal
    ) -> RunRecord:
        """Record where the run stops: a task to wait for, a timer, the end."""
        if isinstance(decision, machine.OpenTask):
            task = journal.task_opened(run, decision)
            payload = {"step_seq": decision.seq, "task_id": str(task["id"])}
            if decision.due_in is not None:
                journal.timer(run.id, "task_due", payload, after=decision.due_in)
            if decision.assignee_email:
                # Its first attempt on a timer due at once: it outlives this worker, like any
                # wake-up, and goes through the ledger like any email (`notify`).
                journal.timer(run.id, "notify", {**payload, "attempt": 1}, after=0)
            return await self._store.checkpoint(replace(run, status=RunStatus.WAITING), journal)
        if isinstance(decision, machine.Sleep):
            until, payload = decision.until, {"step_seq": decision.seq}
            if isinstance(until, datetime):
                journal.timer(run.id, "wait", payload, at=until)
            else:
                journal.timer(run.id, "wait", payload, after=until)
            return await self._store.checkpoint(replace(run, status=RunStatus.WAITING), journal)
        if isinstance(decision, machine.Complete):
            done = replace(run, status=RunStatus.COMPLETED, error=None)
            return await self._store.checkpoint(done, journal)
        assert isinstance(decision, machine.Fail)
        log.info("run_failed", run_id=str(run.id), reason=decision.reason)
        failed = replace(run, status=RunStatus.FAILED, error=decision.reason)
        return await self._store.checkpoint(failed, journal)

    async def _run_actions(
        self,
        run: RunRecord,
        step: StepSpec,
        ledger: Ledger,
        journal: Journal,
        first_action: int,
        attempt: int,
    ) -> list[dict[str, Any]] | Failed | Retry:
        """The step's actions in order: their results, or the first that failed or waits for
        another attempt (its timer is in the journal)."""
        results: list[dict[str, Any]] = []
        sent = effects.emails_done(ledger)
        for index, spec in enumerate(step.actions):
            call = _call(
                run, step, index, attempt if index == first_action else 1, self._limits, sent
            )
            prior = ledger.get(call.key)
            if prior is not None and prior.state == effects.DONE:
                results.append(prior.result or {})
                continue
            outcome = await execute_action(
                call, spec, self._deps, policy=self._retry_policy, journal=journal, now=self._now
            )
            if isinstance(outcome, Retry):
                payload = {"step_seq": run.step_seq, "action_index": index}
                journal.timer(
                    run.id, "retry", {**payload, "attempt": outcome.attempt}, after=outcome.delay
                )
                return outcome
            if isinstance(outcome, Failed):
                return outcome
            ledger[call.key] = effects.EffectState(effects.DONE, outcome.result)
            sent = effects.emails_done(ledger)
            results.append(outcome.result)
        return results

    async def notify(self, run: RunRecord, step: StepSpec, task_id: UUID, attempt: int) -> None:
        """Email the assignee about the run's open task, through the effect ledger like any
        email; a passing failure is tried again on a timer of its own while the run waits."""
        key = f"{run.id}/{run.step_seq}/notify"
        # Its text is the stored task's, never rendered again: no context.
        recorded = await self._store.effects(run.id)
        sent = effects.emails_done(recorded)
        call = replace(
            _call(run, step, len(step.actions), attempt, self._limits, sent, key), context={}
        )
        prior = recorded.get(call.key)
        if prior is not None and prior.state == effects.DONE:
            return
        task = await self._store.task(task_id)
        if task is None or task["status"] != TaskStatus.PENDING:
            return  # settled (or gone) before its assignee was told: nothing to say
        journal = Journal()
        outcome = await execute_action(
            call,
            assignee_email(task, run.id, self._links, self._now()),
            self._deps,
            policy=self._retry_policy,
            journal=journal,
            now=self._now,
            label="notify_assignee",
        )
        if isinstance(outcome, Retry):
            payload = {"step_seq": run.step_seq, "task_id": str(task_id)}
            journal.timer(
                run.id, "notify", {**payload, "attempt": outcome.attempt}, after=outcome.delay
            )
        await self._store.record(run, journal)


def _call(
    run: RunRecord,
    step: StepSpec,
    index: int,
    attempt: int,
    limits: Limits,
    emails_sent: int,
    key: str = "",
) -> ActionCall:
    return ActionCall(
        run_id=run.id,
        workflow_id=run.workflow_id,
        org_id=run.org_id,
        submission_id=run.submission_id,
        step_id=step.id,
        step_seq=run.step_seq,
        index=index,
        attempt=attempt,
        key=key or effect_key(run.id, run.step_seq, index),
        context=run.context,
        limits=limits,
        emails_sent=emails_sent,
    )
