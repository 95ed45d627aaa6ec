"""A step's actions as a stretch runs them: in order, each at most once (an effect the ledger
records as done is not performed again), the run looked at for a cancel between them, a
passing failure left on a retry timer; and the email telling a task's assignee, which goes
through the same ledger. Apart from stretch.py, which decides where the run goes between
steps (and through parallel steps); this part is where effects happen."""

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
from workflow_core.definitions import StepSpec
from workflow_core.definitions.models import RetryPolicy
from workflow_core.engine.limits import Limits
from workflow_core.ids import effect_key
from workflow_core.persistence import effects
from workflow_core.persistence.journal import Journal
from workflow_core.persistence.runs import RunRecord
from workflow_core.statuses import TaskStatus

Ledger = dict[str, effects.EffectState]


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The run was cancelled while this stretch drove it: it goes no further."""


class StepActions:
    """Part of `Stretches` (stretch.py): it uses the stretch's store, action dependencies,
    retry policy, limits, clock and task links."""

    _store: RunStore
    _deps: ActionDeps
    _retry_policy: RetryPolicy
    _limits: Limits
    _now: Callable[[], datetime]
    _links: LinkMaker

    async def _run_actions(
        self,
        run: RunRecord,
        step: StepSpec,
        seq: int,
        ledger: Ledger,
        journal: Journal,
        first_action: int,
        attempt: int,
    ) -> list[dict[str, Any]] | Failed | Retry | Cancelled:
        """The step's actions in order: their results, or the first that failed or waits for
        another attempt (its timer is in the journal). Before each action but the first, the
        run is looked at: a cancelled run does no more."""
        results: list[dict[str, Any]] = []
        sent = effects.emails_done(ledger)
        acted = False  # the run was looked at just before this step (or when it was loaded)
        for index, spec in enumerate(step.actions):
            call = _call(
                run, step, seq, index, attempt if index == first_action else 1, self._limits, sent
            )
            prior = ledger.get(call.key)
            if prior is not None and prior.state == effects.DONE:
                results.append(prior.result or {})
                continue
            if acted and await self._store.cancelled(run.id):
                return Cancelled()
            acted = True
            outcome = await execute_action(
                call, spec, self._deps, policy=self._retry_policy, journal=journal, now=self._now
            )
            if isinstance(outcome, Retry):
                payload = {"step_seq": seq, "action_index": index}
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

    async def notify(
        self, run: RunRecord, step: StepSpec, seq: int, task_id: UUID, attempt: int
    ) -> None:
        """Email the assignee about the open task of visit `seq`, through the effect ledger like
        any email; a passing failure is tried again on a timer of its own while it waits."""
        key = f"{run.id}/{seq}/notify"
        # Its text is the stored task's, never rendered again: no context.
        recorded = await self._store.effects(run.id)
        sent = effects.emails_done(recorded)
        call = replace(
            _call(run, step, seq, len(step.actions), attempt, self._limits, sent, key),
            context={},
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
            payload = {"step_seq": seq, "task_id": str(task_id)}
            journal.timer(
                run.id, "notify", {**payload, "attempt": outcome.attempt}, after=outcome.delay
            )
        await self._store.record(run, journal)


def _call(
    run: RunRecord,
    step: StepSpec,
    seq: int,
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
        step_seq=seq,
        index=index,
        attempt=attempt,
        key=key or effect_key(run.id, seq, index),
        context=run.context,
        limits=limits,
        emails_sent=emails_sent,
    )
