"""Carries out the engine's decisions for runs: starts the runs an event matches, runs the
actions of their steps, opens tasks, sets timers, and writes each run's progress in
checkpoints (one statement per stretch).

Every action is keyed by (run, step visit, action index); an effect already recorded as done
is not performed again, so a redelivered event repeats nothing. An email counts as sent once
its server said 250, and the effect ledger records it at once (persistence/effects.py).

A run's failure is its own: an error inside one run (a bad value, an exception in an action or
in the engine) fails that run with the reason, and the event's other runs go on. Only a
failure to record anything at all (the database away) leaves the event to be delivered again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from services.worker.catalog import ActiveWorkflow, Catalog
from services.worker.execution import Failed, Retry, execute_action
from services.worker.notify import assignee_email
from workflow_core import actions, events
from workflow_core.actions.base import ActionCall, ActionDeps
from workflow_core.coalesce import Coalescer
from workflow_core.definitions import StepSpec, WorkflowDefinition
from workflow_core.definitions.models import RetryPolicy
from workflow_core.engine import machine
from workflow_core.engine.context import initial_context
from workflow_core.errors import Unavailable
from workflow_core.ids import effect_key, run_id_for
from workflow_core.log import get_logger
from workflow_core.persistence import effects, human_tasks, runs
from workflow_core.persistence.db import translate_errors
from workflow_core.persistence.effects import DbEffectLedger
from workflow_core.persistence.journal import Journal
from workflow_core.persistence.pg import Pool
from workflow_core.persistence.runs import RunRecord
from workflow_core.statuses import SETTLED_TASKS, RunStatus, TaskStatus

log = get_logger(__name__)

STATEMENTS_IN_FLIGHT = 1  # per kind (event starts, checkpoints): the rest wait and share the next
Ledger = dict[str, effects.EffectState]
Work = Callable[[], Awaitable[None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Resumption:
    """Where a stretch of a run begins: the decision, and for a retried step the first action
    to run and its attempt number."""

    decision: machine.Decision
    first_action: int = 0
    attempt: int = 1


class RunDriver:
    def __init__(
        self,
        engine: AsyncEngine,
        pool: Pool,
        eager_pool: Pool,
        catalog: Catalog,
        deps: ActionDeps,
        ledger: DbEffectLedger,
        *,
        step_budget: int,
        retry_policy: RetryPolicy,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine, self._pool, self._catalog, self._deps = engine, pool, catalog, deps
        self._ledger = ledger
        self._budget, self._retry_policy, self._now = step_budget, retry_policy, now
        self._locks: dict[UUID, tuple[asyncio.Lock, int]] = {}  # per run: lock, users
        owner = ledger.owner
        # Concurrent events share their round trips: one statement creates the runs of the
        # events taken while the previous one was out (with their first step's email
        # reservations) and marks those events taken; one writes the checkpoints gathered
        # likewise (coalesce.py).
        self._starts: Coalescer[runs.EventStart, list[runs.Inserted]] = Coalescer(
            lambda starts: runs.start_events(eager_pool, starts, owner=owner),
            lambda start: runs.start_event(eager_pool, start, owner=owner),
            max_in_flight=STATEMENTS_IN_FLIGHT,
        )

        async def checkpoint_one(item: tuple[RunRecord, Journal]) -> RunRecord | runs.StaleRun:
            [moved] = await runs.checkpoint_many(pool, [item], owner=owner)
            return moved

        self._checkpoints: Coalescer[tuple[RunRecord, Journal], RunRecord | runs.StaleRun] = (
            Coalescer(
                lambda items: runs.checkpoint_many(pool, items, owner=owner),
                checkpoint_one,
                max_in_flight=STATEMENTS_IN_FLIGHT,
            )
        )

    # -- entry points -------------------------------------------------------------------------

    async def start_runs(self, event: events.Event, deliveries: int) -> int:
        """Start (or, on redelivery, continue) one run per matching workflow; returns how many.
        The runs are created, and the event marked taken, in one statement."""
        matched = await self._catalog.matching(event.payload)
        fresh = [self._new_run(event, workflow, deliveries) for workflow in matched]
        async with translate_errors():
            stored = await self._starts(runs.EventStart(event.event_id, tuple(fresh)))
        for workflow, new, inserted in zip(matched, fresh, stored, strict=True):
            run_id = new.record.id
            await self._isolated(
                run_id,
                partial(self._begin, workflow, inserted, deliveries),
                again=partial(self._carry_on, run_id, deliveries),
                fresh=new.record,
            )
        return len(matched)

    def _new_run(
        self, event: events.Event, workflow: ActiveWorkflow, deliveries: int
    ) -> runs.NewRun:
        payload = event.payload
        run_id = run_id_for(event.event_id, workflow.id)
        first = machine.start(workflow.definition)
        assert isinstance(first, machine.RunStep)
        record = RunRecord(
            id=run_id,
            workflow_id=workflow.id,
            workflow_version=workflow.version,
            submission_id=UUID(payload["submission_id"]),
            event_id=event.event_id,
            org_id=payload.get("org_id"),
            status=RunStatus.RUNNING,
            current_step_id=first.step.id,
            step_seq=first.seq,
            deliveries=deliveries,
            context=initial_context(
                submission=payload, workflow_id=str(workflow.id), run_id=str(run_id)
            ),
        )
        return runs.NewRun(record, _leading_emails(run_id, first))

    async def _begin(
        self, workflow: ActiveWorkflow, inserted: runs.Inserted, deliveries: int
    ) -> None:
        if not inserted.created:
            await self._carry_on(inserted.run.id, deliveries)
            return
        self._ledger.hold(inserted.held)
        first = machine.start(workflow.definition)
        await self._drive(inserted.run, workflow.definition, Resumption(first), {})

    async def _carry_on(self, run_id: UUID, deliveries: int) -> None:
        """A run an earlier delivery started and left part-way (a crash): go on from where it
        was recorded. A run that moved on elsewhere meanwhile is left alone."""
        run = await self._load(run_id)
        if run is None or run.status != RunStatus.RUNNING:
            return
        definition = await self._catalog.definition(run.workflow_id, run.workflow_version)
        run = replace(run, deliveries=max(run.deliveries, deliveries))
        step = definition.step(run.current_step_id or definition.initial_step_id)
        await self._drive(
            run,
            definition,
            Resumption(machine.RunStep(step, run.step_seq)),
            await self._effects(run.id),
        )

    async def resume(self, event: events.Event, deliveries: int) -> None:
        """Wake a run: its task was settled, its wait is over, an action (or the assignee's
        email) is due for another attempt, or it was left running by a worker that died.
        Stale wake-ups (the run moved on) are ignored."""
        run_id = UUID(event.payload["run_id"])
        await self._isolated(run_id, partial(self._resume, run_id, event, deliveries))

    async def _resume(self, run_id: UUID, event: events.Event, deliveries: int) -> None:
        payload, cause = event.payload, event.payload["cause"]
        if cause == "recover":
            await self._carry_on(run_id, deliveries)
            await self._mark_taken(event)
            return
        run = await self._load(run_id)
        if (
            run is None
            or run.status != RunStatus.WAITING
            or payload.get("step_seq") != run.step_seq
        ):
            log.debug("resume_ignored", run_id=str(run_id), cause=cause)
            await self._mark_taken(event)
            return
        definition = await self._catalog.definition(run.workflow_id, run.workflow_version)
        step = definition.step(run.current_step_id or definition.initial_step_id)
        if cause == "notify":
            await self._notify(run, step, UUID(payload["task_id"]), int(payload["attempt"]))
            await self._mark_taken(event)
            return
        run = replace(run, status=RunStatus.RUNNING, deliveries=max(run.deliveries, deliveries))
        journal = Journal(taken=[event.event_id])
        if cause == "retry":
            resumption = Resumption(
                machine.RunStep(step, run.step_seq),
                first_action=int(payload["action_index"]),
                attempt=int(payload["attempt"]),
            )
        elif cause in {"task", "task_due"}:
            task = await self._settled_task(
                UUID(payload["task_id"]), run, time_out=cause == "task_due"
            )
            if task is None:
                await self._mark_taken(event)
                return
            run = replace(
                run, context=machine.with_task_result(run.context, human_tasks.as_context(task))
            )
            resumption = self._after_wait(definition, step, run, journal)
        elif cause == "wait":
            resumption = self._after_wait(definition, step, run, journal)
        else:
            log.warning("resume_cause_unknown", run_id=str(run.id), cause=cause)
            await self._mark_taken(event)
            return
        await self._drive(run, definition, resumption, await self._effects(run.id), journal)

    async def _settled_task(
        self, task_id: UUID, run: RunRecord, *, time_out: bool
    ) -> dict[str, Any] | None:
        """The run's task once completed or timed out (closing it first when its deadline
        fired); None while it is still pending or when it is not this run's."""
        async with translate_errors(), self._engine.begin() as conn:
            task = (
                await human_tasks.time_out(conn, task_id) if time_out else None
            ) or await human_tasks.get(conn, task_id)
        if task is None or task["run_id"] != run.id or task["step_seq"] != run.step_seq:
            return None
        return task if task["status"] in SETTLED_TASKS else None

    def _after_wait(
        self, definition: WorkflowDefinition, step: StepSpec, run: RunRecord, journal: Journal
    ) -> Resumption:
        decision = machine.next_step(definition, step, run.step_seq, run.context, self._budget)
        now = self._now()
        journal.step_left(run.id, run.step_seq, step, decision, now, now)
        return Resumption(decision)

    # -- one run at a time, and its failures its own ------------------------------------------

    async def _isolated(
        self,
        run_id: UUID,
        work: Work,
        *,
        again: Work | None = None,
        fresh: RunRecord | None = None,
    ) -> None:
        """Do `work` on the run (and `again`, after losing a race on it to another worker); an
        error of the run's own fails it with the reason (the event goes on to its other runs
        and is acknowledged). The database being away, or the run's failure not being
        recordable, is raised: the event is delivered again."""
        try:
            await self._exclusively(run_id, work, again or work)
        except (Unavailable, runs.StaleRun):
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"[:2000]
            log.exception("run_failed_unexpectedly", run_id=str(run_id), error=reason)
            async with translate_errors():
                await runs.fail(self._pool, run_id, reason, owner=self._ledger.owner, fresh=fresh)
        finally:
            try:
                await self._ledger.release_held(run_id)
            except Unavailable as error:  # they stay ours; this process takes them when it can
                log.warning("reservations_not_released", run_id=str(run_id), error=str(error))

    async def _exclusively(self, run_id: UUID, work: Work, again: Work) -> None:
        """One event at a time per run in this process (a duplicate waits, then finds the work
        done); if a worker elsewhere moved the run on meanwhile, look again (`again`)."""
        lock, users = self._locks.get(run_id, (asyncio.Lock(), 0))
        self._locks[run_id] = (lock, users + 1)
        try:
            async with lock:
                for attempt in range(1, 4):
                    try:
                        await work()
                        return
                    except runs.StaleRun:
                        if attempt == 3:
                            raise
                        log.info("run_changed_elsewhere", run_id=str(run_id), attempt=attempt)
                        work = again
        finally:
            lock, users = self._locks[run_id]
            if users == 1:
                del self._locks[run_id]
            else:
                self._locks[run_id] = (lock, users - 1)

    # -- the loop -----------------------------------------------------------------------------

    async def _drive(
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
        while True:
            now = self._now()
            if isinstance(decision, machine.RunStep):
                step, seq = decision.step, decision.seq
                run = replace(run, status=RunStatus.RUNNING, current_step_id=step.id, step_seq=seq)
                if first_action == 0 and attempt == 1:
                    journal.step_entered(run.id, seq, step, now)
                outcome = await self._run_actions(
                    run, step, seq, ledger, journal, first_action, attempt
                )
                await self._ledger.release_held(run.id)
                first_action, attempt = 0, 1
                if isinstance(outcome, Failed):
                    journal.step_failed(run.id, seq, step, now, self._now(), outcome.reason)
                    decision = machine.Fail(outcome.reason)
                    continue
                if isinstance(outcome, Retry):  # its timer is in the journal
                    return await self._checkpoint(replace(run, status=RunStatus.WAITING), journal)
                run = replace(run, context=machine.with_step_results(run.context, step.id, outcome))
                decision = machine.after_actions(
                    definition, step, seq, run.context, self._now(), self._budget
                )
                journal.step_left(run.id, seq, step, decision, now, self._now())
                if isinstance(decision, machine.RunStep):
                    run = await self._checkpoint(run, journal)  # progress survives a crash
                continue
            if isinstance(decision, machine.OpenTask):
                task = journal.task_opened(run, decision)
                if decision.due_in is not None:
                    journal.timer(
                        run.id,
                        "task_due",
                        {"step_seq": decision.seq, "task_id": str(task["id"])},
                        after=decision.due_in,
                    )
                run = await self._checkpoint(replace(run, status=RunStatus.WAITING), journal)
                if decision.assignee_email:
                    await self._notify(run, decision.step, task["id"], 1, ledger)
                return run
            if isinstance(decision, machine.Sleep):
                until = decision.until
                journal.timer(
                    run.id,
                    "wait",
                    {"step_seq": decision.seq},
                    **({"at": until} if isinstance(until, datetime) else {"after": until}),
                )
                return await self._checkpoint(replace(run, status=RunStatus.WAITING), journal)
            if isinstance(decision, machine.Complete):
                return await self._checkpoint(
                    replace(run, status=RunStatus.COMPLETED, error=None), journal
                )
            assert isinstance(decision, machine.Fail)
            log.info("run_failed", run_id=str(run.id), reason=decision.reason)
            return await self._checkpoint(
                replace(run, status=RunStatus.FAILED, error=decision.reason), journal
            )

    async def _run_actions(
        self,
        run: RunRecord,
        step: StepSpec,
        seq: int,
        ledger: Ledger,
        journal: Journal,
        first_action: int,
        attempt: int,
    ) -> list[dict[str, Any]] | Failed | Retry:
        """The step's actions in order: their results, or the first that failed or waits for
        another attempt (its timer is in the journal)."""
        results: list[dict[str, Any]] = []
        for index, spec in enumerate(step.actions):
            call = self._call(run, step, seq, index, attempt if index == first_action else 1)
            prior = ledger.get(call.key)
            if prior is not None and prior.state == effects.DONE:
                results.append(prior.result or {})
                continue
            outcome = await execute_action(
                call, spec, self._deps, policy=self._retry_policy, journal=journal, now=self._now
            )
            if isinstance(outcome, Retry):
                journal.timer(
                    run.id,
                    "retry",
                    {"step_seq": seq, "action_index": index, "attempt": outcome.attempt},
                    after=outcome.delay,
                )
                return outcome
            if isinstance(outcome, Failed):
                return outcome
            ledger[call.key] = effects.EffectState(effects.DONE, outcome.result)
            results.append(outcome.result)
        return results

    def _call(
        self, run: RunRecord, step: StepSpec, seq: int, index: int, attempt: int, key: str = ""
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
        )

    async def _notify(
        self,
        run: RunRecord,
        step: StepSpec,
        task_id: UUID,
        attempt: int,
        ledger: Ledger | None = None,
    ) -> None:
        """Email the assignee about the run's open task, through the effect ledger like any
        email; a passing failure is tried again on a timer of its own while the run waits."""
        call = replace(
            self._call(
                run,
                step,
                run.step_seq,
                len(step.actions),
                attempt,
                f"{run.id}/{run.step_seq}/notify",
            ),
            context={},  # its text is the stored task's, never rendered again
        )
        states = ledger if ledger is not None else await self._effects(run.id)
        prior = states.get(call.key)
        if prior is not None and prior.state == effects.DONE:
            return
        async with translate_errors(), self._engine.connect() as conn:
            task = await human_tasks.get(conn, task_id)
        if task is None or task["status"] != TaskStatus.PENDING:
            return  # settled (or gone) before its assignee was told: nothing to say
        journal = Journal()
        outcome = await execute_action(
            call,
            assignee_email(task, run.id),
            self._deps,
            policy=self._retry_policy,
            journal=journal,
            now=self._now,
            label="notify_assignee",
        )
        if isinstance(outcome, Retry):
            journal.timer(
                run.id,
                "notify",
                {"step_seq": run.step_seq, "task_id": str(task_id), "attempt": outcome.attempt},
                after=outcome.delay,
            )
        await self._record(run, journal)

    # -- persistence --------------------------------------------------------------------------

    async def _load(self, run_id: UUID) -> RunRecord | None:
        async with translate_errors(), self._engine.connect() as conn:
            return await runs.get(conn, run_id)

    async def _effects(self, run_id: UUID) -> Ledger:
        async with translate_errors(), self._engine.connect() as conn:
            return await effects.for_run(conn, run_id)

    async def _checkpoint(self, run: RunRecord, journal: Journal) -> RunRecord:
        keys = journal.effect_keys()
        async with translate_errors():
            moved = await self._checkpoints((run, journal))
        self._ledger.recorded(keys)  # a stale run's effects are written all the same
        if isinstance(moved, runs.StaleRun):
            raise moved
        return moved

    async def _record(self, run: RunRecord, journal: Journal) -> None:
        keys = journal.effect_keys()
        async with translate_errors():
            await runs.record_facts(self._pool, run, journal)
        self._ledger.recorded(keys)

    async def _mark_taken(self, event: events.Event) -> None:
        async with translate_errors():
            await self._starts(runs.EventStart(event.event_id))


def _leading_emails(run_id: UUID, first: machine.RunStep) -> tuple[str, ...]:
    """The emails that open the first step: reserved with the run's creation. (An email after
    another kind of action is reserved when it is reached.)"""
    keys = []
    for index, spec in enumerate(first.step.actions):
        action_type = actions.get(spec.type)
        if action_type is None or not action_type.reserves_effect:
            break
        keys.append(effect_key(run_id, first.seq, index))
    return tuple(keys)
