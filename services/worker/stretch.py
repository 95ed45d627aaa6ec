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

from services.worker.execution import Failed, Retry
from services.worker.notify import LinkMaker
from services.worker.step_actions import Cancelled, Ledger, StepActions
from services.worker.store import RunStore
from workflow_core import tracing
from workflow_core.actions.base import ActionDeps
from workflow_core.definitions import StepSpec, WorkflowDefinition
from workflow_core.definitions.models import RetryPolicy
from workflow_core.engine import machine, parallel
from workflow_core.engine.limits import DEFAULT_LIMITS, Limits
from workflow_core.errors import LimitExceeded
from workflow_core.log import get_logger
from workflow_core.persistence.effects import DbEffectLedger
from workflow_core.persistence.journal import Journal
from workflow_core.persistence.runs import RunRecord
from workflow_core.statuses import RunStatus

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Resumption:
    """Where a stretch begins: the decision, and for a retried step the first action to run
    and its attempt number."""

    decision: machine.Decision
    first_action: int = 0
    attempt: int = 1
    branch: str | None = None
    """In a parallel step (`decision` enters it again): the branch `first_action` and
    `attempt` are for."""


class Stretches(StepActions):
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
        """Drive the run to its next resting point and record it there; the run as recorded."""
        run = await self._drive(run, definition, resumption, ledger, journal or Journal())
        _trace_run(run)
        return run

    async def _drive(
        self,
        run: RunRecord,
        definition: WorkflowDefinition,
        resumption: Resumption,
        ledger: Ledger,
        journal: Journal,
    ) -> RunRecord:
        decision = resumption.decision
        first_action, attempt = resumption.first_action, resumption.attempt
        # A cancelled run goes no further. Before each step: the caller loaded the run unfinished
        # (or has just created it), and each later step follows a checkpoint, which writes only
        # the revision it read: a cancel in between makes it `StaleRun` (the run is looked at
        # again, and left alone). Before each later action of a step, the run is looked at.
        while isinstance(decision, machine.RunStep):
            step, seq, now = decision.step, decision.seq, self._now()
            if step.type == "parallel":
                retry = (resumption.branch, first_action, attempt)
                went = await self._through_parallel(
                    run, definition, decision, ledger, journal, retry
                )
                first_action, attempt = 0, 1
                if isinstance(went, RunRecord):  # every open branch waits, or a cancel came
                    return went
                run, decision = went
                continue
            run = replace(run, status=RunStatus.RUNNING, current_step_id=step.id, step_seq=seq)
            if first_action == 0 and attempt == 1:
                journal.step_entered(run.id, seq, step, now)
            with tracing.span(f"step {step.id}", _step_attributes(run, step)):
                outcome = await self._run_actions(
                    run, step, seq, ledger, journal, first_action, attempt
                )
                _trace_step(outcome)
            await self._ledger.release_held(run.id)
            first_action, attempt = 0, 1
            if isinstance(outcome, Cancelled):
                journal.step_cancelled(run.id, seq, step, now, self._now())
                return await self._stop(run, journal)
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

    async def _through_parallel(
        self,
        run: RunRecord,
        definition: WorkflowDefinition,
        entry: machine.RunStep,
        ledger: Ledger,
        journal: Journal,
        retry: tuple[str | None, int, int],
    ) -> RunRecord | tuple[RunRecord, machine.Decision]:
        """A parallel step's turn: its branches move until it ends (the run and what follows
        it) or the run rests, recorded (every open branch waits, or the run was cancelled)."""
        step, now = entry.step, self._now()
        try:
            run, ended = await self._parallel(run, definition, entry, ledger, journal, retry)
        except _BranchCancelled as cancelled:
            return await self._stop(cancelled.run, journal)
        if ended is None:  # every open branch waits
            state = parallel.state(run.context, step.id)
            assert state is not None
            journal.step_waiting(run.id, state["seq"], step, now)
            return await self._store.checkpoint(replace(run, status=RunStatus.WAITING), journal)
        if isinstance(ended, machine.RunStep):  # joined: the run moves on
            moved_on = replace(run, current_step_id=ended.step.id, step_seq=ended.seq)
            run = await self._store.checkpoint(moved_on, journal)
        return run, ended

    async def _stop(self, run: RunRecord, journal: Journal) -> RunRecord:
        """The run was cancelled: record what it did (attempts, effects performed) and the
        events it handled, and move it no further."""
        log.info("run_cancelled_stopped", run_id=str(run.id), step_id=run.current_step_id)
        journal.timers.clear()
        await self._store.record(run, journal)
        for event_id in journal.taken:
            await self._store.taken(event_id)
        return replace(run, status=RunStatus.CANCELLED)

    # -- parallel steps -------------------------------------------------------------------------

    async def _parallel(
        self,
        run: RunRecord,
        definition: WorkflowDefinition,
        entry: machine.RunStep,
        ledger: Ledger,
        journal: Journal,
        retry: tuple[str | None, int, int],
    ) -> tuple[RunRecord, machine.Decision | None]:
        """Enter a parallel step (or go on in the visit under way) and move its branches until
        it ends (its decision) or every open branch waits (None)."""
        step, seq = entry.step, entry.seq
        run = replace(run, status=RunStatus.RUNNING, current_step_id=step.id)
        if not parallel.is_open(run.context, step, seq):
            journal.step_entered(run.id, seq, step, self._now())
            entered = parallel.enter(step, seq, run.context, self._budget)
            if isinstance(entered, machine.Fail):
                journal.step_left(run.id, seq, step, entered, self._now(), self._now())
                return replace(run, step_seq=seq), entered
            run = replace(run, context=entered, step_seq=seq + len(step.branches))
        stepped = False
        while (ended := self._joined(definition, step, run)) is None:
            cursor = parallel.next_branch(run.context, step.id)
            if cursor is None:
                return run, None
            if stepped:
                run = await self._store.checkpoint(run, journal)  # progress survives a crash
            first_action, attempt = retry[1:] if retry[0] == cursor.branch else (0, 1)
            retry = (None, 0, 1)
            run = await self._branch_step(
                run, definition, step, cursor, ledger, journal, first_action, attempt
            )
            stepped = True
        return self._end_parallel(run, step, ended, journal), ended

    def _joined(
        self, definition: WorkflowDefinition, step: StepSpec, run: RunRecord
    ) -> machine.Decision | None:
        return parallel.outcome(definition, step, run.context, run.step_seq, self._budget)

    async def _branch_step(
        self,
        run: RunRecord,
        definition: WorkflowDefinition,
        parallel_step: StepSpec,
        cursor: parallel.Cursor,
        ledger: Ledger,
        journal: Journal,
        first_action: int,
        attempt: int,
    ) -> RunRecord:
        """One step of one branch: its actions, then where the branch goes."""
        step, seq, now = definition.step(cursor.step), cursor.seq, self._now()
        if first_action == 0 and attempt == 1:
            journal.step_entered(run.id, seq, step, now)
        outcome = await self._run_actions(run, step, seq, ledger, journal, first_action, attempt)
        await self._ledger.release_held(run.id)
        if isinstance(outcome, Cancelled):
            journal.step_cancelled(run.id, seq, step, now, self._now())
            raise _BranchCancelled(run)
        if isinstance(outcome, Retry):  # its timer is in the journal
            return replace(
                run, context=parallel.waiting(run.context, parallel_step.id, cursor.branch)
            )
        if isinstance(outcome, Failed):
            journal.step_failed(run.id, seq, step, now, self._now(), outcome.reason)
            decision: machine.Decision = machine.Fail(outcome.reason)
        else:
            run = replace(run, context=machine.with_step_results(run.context, step.id, outcome))
            decision = self._after_actions(definition, step, seq, run, last_seq=run.step_seq)
            journal.step_left(run.id, seq, step, decision, now, self._now())
            if isinstance(decision, machine.OpenTask | machine.Sleep | machine.AwaitEvent):
                self._wait_for(run, decision, journal)
            elif isinstance(decision, machine.RunStep):
                run = replace(run, step_seq=decision.seq)
        context = parallel.moved(run.context, parallel_step.id, cursor.branch, decision)
        return replace(run, context=context)

    def _end_parallel(
        self, run: RunRecord, step: StepSpec, ended: machine.Decision, journal: Journal
    ) -> RunRecord:
        """The parallel step joined (or a branch failed): the branches still open are cancelled,
        their tasks and timers with them."""
        journal.cancel_visits(run.id, parallel.open_visits(run.context, step.id))
        status = parallel.FAILED if isinstance(ended, machine.Fail) else parallel.COMPLETED
        state = parallel.state(run.context, step.id)
        assert state is not None
        now = self._now()
        journal.step_left(run.id, state["seq"], step, ended, now, now)
        return replace(run, context=parallel.closed(run.context, step.id, status))

    def _after_actions(
        self,
        definition: WorkflowDefinition,
        step: StepSpec,
        seq: int,
        run: RunRecord,
        *,
        last_seq: int | None = None,
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
                last_seq=last_seq,
            )
        except LimitExceeded as error:  # a human task's text over MAX_RENDERED_BYTES
            return machine.Fail(f"{step.id}: {error.message}")

    async def _rest(
        self, run: RunRecord, decision: machine.Decision, journal: Journal
    ) -> RunRecord:
        """Record where the run stops: a task, a timer or an event to wait for, the end."""
        if isinstance(decision, machine.OpenTask | machine.Sleep | machine.AwaitEvent):
            self._wait_for(run, decision, journal)
            return await self._store.checkpoint(replace(run, status=RunStatus.WAITING), journal)
        if isinstance(decision, machine.Complete):
            done = replace(run, status=RunStatus.COMPLETED, error=None)
            return await self._store.checkpoint(done, journal)
        assert isinstance(decision, machine.Fail)
        log.info("run_failed", run_id=str(run.id), reason=decision.reason)
        failed = replace(run, status=RunStatus.FAILED, error=decision.reason)
        return await self._store.checkpoint(failed, journal)

    @staticmethod
    def _wait_for(
        run: RunRecord,
        decision: machine.OpenTask | machine.Sleep | machine.AwaitEvent,
        journal: Journal,
    ) -> None:
        """The task, event wait and timers a step waits for (its run, or its branch)."""
        if isinstance(decision, machine.AwaitEvent):
            journal.event_awaited(run, decision)
            return
        if isinstance(decision, machine.OpenTask):
            task = journal.task_opened(run, decision)
            payload = {"step_seq": decision.seq, "task_id": str(task["id"])}
            if decision.due_in is not None:
                journal.timer(run.id, "task_due", payload, after=decision.due_in)
            if decision.assignee_email:
                # Its first attempt on a timer due at once: it outlives this worker, like any
                # wake-up, and goes through the ledger like any email (`notify`).
                journal.timer(run.id, "notify", {**payload, "attempt": 1}, after=0)
            return
        until, payload = decision.until, {"step_seq": decision.seq}
        if isinstance(until, datetime):
            journal.timer(run.id, "wait", payload, at=until)
        else:
            journal.timer(run.id, "wait", payload, after=until)


def _step_attributes(run: RunRecord, step: StepSpec) -> dict[str, Any] | None:
    if not tracing.ENABLED:
        return None
    return {
        "flowline.run_id": run.id,
        "flowline.workflow_id": run.workflow_id,
        "flowline.step_id": step.id,
        "flowline.step_seq": run.step_seq,
    }


class _BranchCancelled(Exception):
    """The run was cancelled while one of its parallel branches acted: the stretch stops."""

    def __init__(self, run: RunRecord) -> None:
        super().__init__(str(run.id))
        self.run = run


def _trace_step(outcome: list[dict[str, Any]] | Failed | Retry | Cancelled) -> None:
    if not tracing.ENABLED:
        return
    if isinstance(outcome, Failed):
        tracing.annotate({"flowline.outcome": "failed"})
        tracing.fail(outcome.reason)
    elif isinstance(outcome, Cancelled):
        tracing.annotate({"flowline.outcome": "cancelled"})
    else:
        tracing.annotate({"flowline.outcome": "retry" if isinstance(outcome, Retry) else "done"})


def _trace_run(run: RunRecord) -> None:
    """Where the stretch left the run, on the run's span."""
    if not tracing.ENABLED:
        return
    tracing.annotate({"flowline.workflow_id": run.workflow_id, "flowline.outcome": str(run.status)})
    if run.status == RunStatus.FAILED:
        tracing.fail(run.error or "failed")
