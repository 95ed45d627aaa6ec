"""Carries out the engine's decisions for one run: runs the actions of a step, opens tasks,
sets timers, and writes the run's progress in checkpoints (one transaction per stretch).

Every action is keyed by (run, step visit, action index); an effect already recorded as done
is not performed again, so a redelivered event repeats nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from services.worker.catalog import ActiveWorkflow, Catalog
from workflow_core import actions, events
from workflow_core.actions import send_email
from workflow_core.actions.base import ActionCall, ActionDeps
from workflow_core.coalesce import Coalescer
from workflow_core.definitions import StepSpec, WorkflowDefinition
from workflow_core.definitions.models import RetryPolicy
from workflow_core.engine import machine
from workflow_core.engine.context import initial_context
from workflow_core.engine.retry import GiveUp, RetryAfter, next_attempt
from workflow_core.errors import (
    ActionFailed,
    EffectBusy,
    PermanentActionError,
    RetryableActionError,
)
from workflow_core.ids import derived_id, effect_key, new_id, run_id_for
from workflow_core.log import get_logger
from workflow_core.persistence import effects, human_tasks, runs
from workflow_core.persistence.db import translate_errors
from workflow_core.persistence.pg import Pool
from workflow_core.persistence.runs import RUNNING, WAITING, Journal, RunRecord

log = get_logger(__name__)

STATEMENTS_IN_FLIGHT = 1  # per kind (run inserts, checkpoints): the rest wait and share the next


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class StepFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    due_at: datetime


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
        *,
        step_budget: int,
        retry_policy: RetryPolicy,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine, self._pool, self._catalog, self._deps = engine, pool, catalog, deps
        self._budget, self._retry_policy, self._now = step_budget, retry_policy, now
        self._locks: dict[UUID, tuple[asyncio.Lock, int]] = {}  # per run: lock, users
        # Concurrent runs share their round trips: one statement inserts the runs started while
        # the previous insert was out (with their first step's email reservations), one writes
        # the checkpoints gathered likewise (coalesce.py).
        owner = deps.ledger.owner
        self._inserts: Coalescer[runs.NewRun, runs.Inserted] = Coalescer(
            lambda fresh: runs.insert_many(eager_pool, fresh, owner=owner),
            lambda new: runs.insert_if_absent(
                eager_pool, new.record, reserve=new.reserve, owner=owner
            ),
            max_in_flight=STATEMENTS_IN_FLIGHT,
        )
        self._checkpoints: Coalescer[tuple[RunRecord, Journal], RunRecord] = Coalescer(
            lambda items: runs.checkpoint_many(pool, items),
            lambda item: runs.checkpoint(pool, *item),
            max_in_flight=STATEMENTS_IN_FLIGHT,
        )

    # -- entry points -------------------------------------------------------------------------

    async def start_runs(self, event: events.Event, deliveries: int) -> int:
        """Start (or, on redelivery, continue) one run per matching workflow; returns how many."""
        matched = await self._catalog.matching(event.payload)
        for workflow in matched:
            run_id = run_id_for(event.event_id, workflow.id)
            await self._exclusively(run_id, partial(self._start, event, workflow, deliveries))
        return len(matched)

    async def _start(self, event: events.Event, workflow: ActiveWorkflow, deliveries: int) -> None:
        payload = event.payload
        run_id = run_id_for(event.event_id, workflow.id)
        first = machine.start(workflow.definition)
        assert isinstance(first, machine.RunStep)
        fresh = RunRecord(
            id=run_id,
            workflow_id=workflow.id,
            workflow_version=workflow.version,
            submission_id=UUID(payload["submission_id"]),
            event_id=event.event_id,
            org_id=payload.get("org_id"),
            status=RUNNING,
            current_step_id=first.step.id,
            step_seq=first.seq,
            deliveries=deliveries,
            context=initial_context(
                submission=payload, workflow_id=str(workflow.id), run_id=str(run_id)
            ),
        )
        reserve = tuple(
            effect_key(run_id, first.seq, index)
            for index, spec in enumerate(first.step.actions)
            if (action_type := actions.get(spec.type)) is not None and action_type.reserves_effect
        )
        async with translate_errors():
            inserted = await self._inserts(runs.NewRun(fresh, reserve))
        run = inserted.run
        if inserted.created:
            held = {key: effects.EffectState(effects.HELD, None) for key in inserted.held}
            await self._drive(run, workflow.definition, Resumption(first), held)
        elif run.status == RUNNING:
            # An earlier delivery stopped part-way (a crash): carry on where it was recorded.
            definition = await self._catalog.definition(run.workflow_id, run.workflow_version)
            run = replace(run, deliveries=max(run.deliveries, deliveries))
            step = definition.step(run.current_step_id or definition.initial_step_id)
            await self._drive(
                run,
                definition,
                Resumption(machine.RunStep(step, run.step_seq)),
                await self._ledger(run.id),
            )

    async def _exclusively(self, run_id: UUID, work: Callable[[], Awaitable[None]]) -> None:
        """One event at a time per run in this process (a duplicate waits, then finds the work
        done); if a worker elsewhere moved the run on meanwhile, look again from the top."""
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
        finally:
            lock, users = self._locks[run_id]
            if users == 1:
                del self._locks[run_id]
            else:
                self._locks[run_id] = (lock, users - 1)

    async def resume(self, event: events.Event, deliveries: int) -> None:
        """Wake a waiting run: its task was settled, its wait is over, or an action is due for
        another attempt. Stale wake-ups (the run moved on) are ignored."""
        run_id = UUID(event.payload["run_id"])
        await self._exclusively(run_id, lambda: self._resume(run_id, event, deliveries))

    async def _resume(self, run_id: UUID, event: events.Event, deliveries: int) -> None:
        payload = event.payload
        async with translate_errors(), self._engine.begin() as conn:
            run = await runs.get(conn, run_id)
        if run is None or run.status != WAITING or payload.get("step_seq") != run.step_seq:
            log.debug(
                "resume_ignored",
                run_id=str(run_id),
                cause=payload["cause"],
                status=run.status if run else None,
            )
            return
        definition = await self._catalog.definition(run.workflow_id, run.workflow_version)
        step = definition.step(run.current_step_id or definition.initial_step_id)
        run = replace(run, status=RUNNING, deliveries=max(run.deliveries, deliveries))
        journal = Journal()
        cause = payload["cause"]
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
                return
            run = replace(
                run, context=machine.with_task_result(run.context, human_tasks.as_context(task))
            )
            resumption = self._after_wait(definition, step, run, journal)
        elif cause == "wait":
            resumption = self._after_wait(definition, step, run, journal)
        else:
            log.warning("resume_cause_unknown", run_id=str(run.id), cause=cause)
            return
        await self._drive(run, definition, resumption, await self._ledger(run.id), journal)

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
        return task if task["status"] in {human_tasks.COMPLETED, human_tasks.TIMED_OUT} else None

    def _after_wait(
        self, definition: WorkflowDefinition, step: StepSpec, run: RunRecord, journal: Journal
    ) -> Resumption:
        decision = machine.next_step(definition, step, run.step_seq, run.context, self._budget)
        now = self._now()
        journal.steps.append(_finished_step_row(run.id, run.step_seq, step, decision, now, now))
        return Resumption(decision)

    async def _ledger(self, run_id: UUID) -> dict[str, effects.EffectState]:
        async with translate_errors(), self._engine.connect() as conn:
            return await effects.for_run(conn, run_id)

    # -- the loop -----------------------------------------------------------------------------

    async def _drive(
        self,
        run: RunRecord,
        definition: WorkflowDefinition,
        resumption: Resumption,
        ledger: dict[str, effects.EffectState],
        journal: Journal | None = None,
    ) -> RunRecord:
        journal = journal or Journal()
        decision = resumption.decision
        first_action, attempt = resumption.first_action, resumption.attempt
        while True:
            now = self._now()
            if isinstance(decision, machine.RunStep):
                step, seq = decision.step, decision.seq
                run = replace(run, status=RUNNING, current_step_id=step.id, step_seq=seq)
                if first_action == 0 and attempt == 1:
                    journal.steps.append(_step_row(run.id, seq, step, "running", now))
                outcome = await self._run_actions(
                    run, step, seq, ledger, journal, first_action, attempt
                )
                await self._release_held(ledger)
                first_action, attempt = 0, 1
                if isinstance(outcome, RetryScheduled):
                    return await self._checkpoint(replace(run, status=WAITING), journal)
                if isinstance(outcome, StepFailed):
                    journal.steps.append(
                        _step_row(
                            run.id,
                            seq,
                            step,
                            "failed",
                            now,
                            error=outcome.reason,
                            finished=self._now(),
                        )
                    )
                    decision = machine.Fail(outcome.reason)
                    continue
                run = replace(run, context=machine.with_step_results(run.context, step.id, outcome))
                decision = machine.after_actions(
                    definition, step, seq, run.context, self._now(), self._budget
                )
                journal.steps.append(
                    _finished_step_row(run.id, seq, step, decision, now, self._now())
                )
                if isinstance(decision, machine.RunStep):
                    run = await self._checkpoint(run, journal)  # progress survives a crash
                continue
            if isinstance(decision, machine.OpenTask):
                task = _task_row(run, decision, now)
                journal.tasks.append(task)
                if decision.due_at is not None:
                    journal.timers.append(
                        _timer_row(
                            run,
                            "task_due",
                            decision.due_at,
                            {"step_seq": decision.seq, "task_id": str(task["id"])},
                        )
                    )
                if decision.assignee_email:
                    await self._notify_assignee(run, decision, task["id"], ledger, journal)
                return await self._checkpoint(replace(run, status=WAITING), journal)
            if isinstance(decision, machine.Sleep):
                journal.timers.append(
                    _timer_row(run, "wait", decision.until, {"step_seq": decision.seq})
                )
                return await self._checkpoint(replace(run, status=WAITING), journal)
            if isinstance(decision, machine.Complete):
                return await self._checkpoint(
                    replace(run, status=runs.COMPLETED, error=None), journal
                )
            assert isinstance(decision, machine.Fail)
            log.info("run_failed", run_id=str(run.id), reason=decision.reason)
            return await self._checkpoint(
                replace(run, status=runs.FAILED, error=decision.reason), journal
            )

    async def _notify_assignee(
        self,
        run: RunRecord,
        decision: machine.OpenTask,
        task_id: UUID,
        ledger: dict[str, effects.EffectState],
        journal: Journal,
    ) -> None:
        """Email the assignee about a new task. Best effort: a failure is recorded in the run's
        history and does not hold the task back."""
        key = f"{run.id}/{decision.seq}/notify"
        if key in ledger and ledger[key].state == effects.DONE:
            return
        index = len(decision.step.actions)  # after the step's own actions in the history
        call = ActionCall(
            run_id=run.id,
            workflow_id=run.workflow_id,
            org_id=run.org_id,
            submission_id=run.submission_id,
            step_id=decision.step.id,
            step_seq=decision.seq,
            index=index,
            attempt=1,
            key=key,
            context=run.context,
            claimed=key in ledger and ledger[key].state == effects.COMMITTING,
        )
        config = send_email.SendEmailConfig(
            to=decision.assignee_email,
            subject=f"Task for you: {decision.title}",
            body=(
                f"A task is waiting for you: {decision.title}\n\n"
                f"{decision.description or ''}\n\nTask: {task_id}\nRun: {run.id}\n"
                + (f"Due: {decision.due_at.isoformat()}\n" if decision.due_at else "")
                + f"\nComplete it with POST /tasks/{task_id}/complete\n"
            ),
        )
        started = self._now()
        try:
            result = await send_email.execute(call, config, self._deps)
        except ActionFailed as error:
            journal.actions.append(
                _action_row(
                    call, "notify_assignee", "failed", started, self._now(), error=error.message
                )
            )
            return
        journal.actions.append(
            _action_row(call, "notify_assignee", "succeeded", started, self._now(), result=result)
        )
        journal.effects_done.append(
            {"key": key, "run_id": run.id, "state": effects.DONE, "result": result}
        )

    async def _release_held(self, ledger: dict[str, effects.EffectState]) -> None:
        """Give up the reservations taken with the run for emails the step did not reach (it
        failed or waits for a retry), so that a retry elsewhere need not wait for them to go
        stale. After a step that succeeded none is left: every email it ran is done."""
        for key in [key for key, state in ledger.items() if state.state == effects.HELD]:
            del ledger[key]
            async with translate_errors():
                await self._deps.ledger.release(key)

    async def _checkpoint(self, run: RunRecord, journal: Journal) -> RunRecord:
        async with translate_errors():
            return await self._checkpoints((run, journal))

    async def _run_actions(
        self,
        run: RunRecord,
        step: StepSpec,
        seq: int,
        ledger: dict[str, effects.EffectState],
        journal: Journal,
        first_action: int,
        attempt: int,
    ) -> list[dict[str, Any]] | StepFailed | RetryScheduled:
        results: list[dict[str, Any]] = []
        for index, spec in enumerate(step.actions):
            key = effect_key(run.id, seq, index)
            prior = ledger.get(key)
            if prior is not None and prior.state == effects.DONE:
                results.append(prior.result or {})
                continue
            action_type = actions.get(spec.type)
            where = f"{step.id}.actions[{index}] ({spec.type})"
            if action_type is None:
                return StepFailed(f"{where}: no executor for action type {spec.type!r}")
            call = ActionCall(
                run_id=run.id,
                workflow_id=run.workflow_id,
                org_id=run.org_id,
                submission_id=run.submission_id,
                step_id=step.id,
                step_seq=seq,
                index=index,
                attempt=attempt if index == first_action else 1,
                key=key,
                context=run.context,
                claimed=prior is not None and prior.state == effects.COMMITTING,
                reserved=prior is not None and prior.state == effects.HELD,
            )
            started = self._now()
            try:
                result = await action_type.execute(
                    call, action_type.config.model_validate(spec.config), self._deps
                )
            except RetryableActionError as error:
                plan = (
                    # Waiting for another attempt's hold to end is not a failed attempt.
                    RetryAfter(error.retry_after or 0.1)
                    if isinstance(error, EffectBusy)
                    else next_attempt(
                        call.attempt,
                        spec.retry or self._retry_policy,
                        retry_after=error.retry_after,
                    )
                )
                next_number = call.attempt if isinstance(error, EffectBusy) else call.attempt + 1
                if isinstance(plan, GiveUp):
                    journal.actions.append(
                        _action_row(
                            call,
                            spec.type,
                            "failed",
                            started,
                            self._now(),
                            error=f"{error.message} ({plan.reason})",
                        )
                    )
                    return StepFailed(f"{where} failed: {error.message} ({plan.reason})")
                due = self._now() + timedelta(seconds=plan.seconds)
                journal.actions.append(
                    _action_row(
                        call,
                        spec.type,
                        "retrying",
                        started,
                        self._now(),
                        error=f"{error.message}; attempt {next_number} at {due.isoformat()}",
                    )
                )
                journal.timers.append(
                    _timer_row(
                        run,
                        "retry",
                        due,
                        {"step_seq": seq, "action_index": index, "attempt": next_number},
                    )
                )
                return RetryScheduled(due)
            except PermanentActionError as error:
                journal.actions.append(
                    _action_row(
                        call, spec.type, "failed", started, self._now(), error=error.message
                    )
                )
                return StepFailed(f"{where} failed: {error.message}")
            journal.actions.append(
                _action_row(call, spec.type, "succeeded", started, self._now(), result=result)
            )
            journal.effects_done.append(
                {"key": key, "run_id": run.id, "state": effects.DONE, "result": result}
            )
            ledger[key] = effects.EffectState(effects.DONE, result)
            results.append(result)
        return results


def _step_row(
    run_id: UUID,
    seq: int,
    step: StepSpec,
    status: str,
    entered: datetime,
    *,
    finished: datetime | None = None,
    error: str | None = None,
    transition_to: str | None = None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "seq": seq,
        "step_id": step.id,
        "step_type": step.type,
        "status": status,
        "entered_at": entered,
        "finished_at": finished,
        "transition_to": transition_to,
        "error": error,
    }


def _finished_step_row(
    run_id: UUID,
    seq: int,
    step: StepSpec,
    decision: machine.Decision,
    entered: datetime,
    now: datetime,
) -> dict[str, Any]:
    if isinstance(decision, machine.OpenTask | machine.Sleep):
        return _step_row(run_id, seq, step, "waiting", entered)
    if isinstance(decision, machine.Fail):
        return _step_row(run_id, seq, step, "failed", entered, finished=now, error=decision.reason)
    target = decision.step.id if isinstance(decision, machine.RunStep) else None
    return _step_row(run_id, seq, step, "completed", entered, finished=now, transition_to=target)


def _action_row(
    call: ActionCall,
    action_type: str,
    status: str,
    started: datetime,
    finished: datetime,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "run_id": call.run_id,
        "step_seq": call.step_seq,
        "step_id": call.step_id,
        "action_index": call.index,
        "action_type": action_type,
        "attempt": call.attempt,
        "status": status,
        "started_at": started,
        "finished_at": finished,
        "result": result,
        "error": error,
        "delivery": None,
    }


def _task_row(run: RunRecord, decision: machine.OpenTask, now: datetime) -> dict[str, Any]:
    return {
        "id": derived_id(f"{run.id}/{decision.seq}/task"),
        "kind": "human",
        "run_id": run.id,
        "workflow_id": run.workflow_id,
        "step_id": decision.step.id,
        "step_seq": decision.seq,
        "submission_id": run.submission_id,
        "org_id": run.org_id,
        "title": decision.title,
        "description": decision.description,
        "assignee": decision.assignee,
        "status": "pending",
        "due_at": decision.due_at,
        "created_at": now,
        "updated_at": now,
        "fields": {"assignee_email": decision.assignee_email} if decision.assignee_email else None,
    }


def _timer_row(
    run: RunRecord, kind: str, due_at: datetime, payload: dict[str, Any]
) -> dict[str, Any]:
    return {"id": new_id(), "run_id": run.id, "kind": kind, "due_at": due_at, "payload": payload}
