"""What a worker does with an event: start the runs it matches (or continue them after a crash),
or wake a run (its task was settled, its time came, an action is due again, its worker died).
A run is driven by one event at a time in this process, and its failure is its own: an error
inside one run (a bad value, an exception in an action or in the engine) fails that run with
the reason, and the event's other runs go on. Only a failure to record anything at all (the
database away) leaves the event to be delivered again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID

from services.worker.catalog import ActiveWorkflow, Catalog
from services.worker.store import RunStore
from services.worker.stretch import Resumption, Stretches
from services.worker.wakeups import WakeUps
from workflow_core import actions, events, tracing
from workflow_core.definitions import StepSpec, WorkflowDefinition
from workflow_core.engine import machine, parallel
from workflow_core.engine.context import initial_context, posted_event_context
from workflow_core.engine.durations import parse_timestamp
from workflow_core.engine.gates import gate_keys, gate_of
from workflow_core.errors import Unavailable
from workflow_core.ids import effect_key, run_id_for
from workflow_core.log import bound, get_logger
from workflow_core.persistence import runs
from workflow_core.persistence.effects import DbEffectLedger
from workflow_core.persistence.journal import Journal
from workflow_core.persistence.runs import RunRecord
from workflow_core.statuses import RunStatus

log = get_logger(__name__)

Work = Callable[[], Awaitable[None]]
PUT_OFF_SECONDS = 1.0
# A wake-up's fields that its timer does not keep: the event writes them again when it fires.
_ENVELOPE = frozenset({"event_id", "event_type", "run_id", "cause", "timer_id"})


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunDriver(WakeUps):
    def __init__(
        self,
        store: RunStore,
        catalog: Catalog,
        stretches: Stretches,
        ledger: DbEffectLedger,
        *,
        step_budget: int,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store, self._catalog, self._stretches = store, catalog, stretches
        self._ledger, self._budget, self._now = ledger, step_budget, now
        self._locks: dict[UUID, tuple[asyncio.Lock, int]] = {}  # per run: lock, users

    # -- entry points -------------------------------------------------------------------------

    async def start_runs(self, event: events.Event, deliveries: int) -> int:
        """Start (or, on redelivery, continue) one run per matching workflow; returns how many.
        The runs are created, and the event marked taken, in one statement."""
        if event.type == events.POSTED:  # the runs waiting for it, before it counts as taken
            await self._store.settle_waits(event.payload)
        matched = await self._catalog.matching(event.payload)
        fresh = [self._new_run(event, workflow, deliveries) for workflow in matched]
        stored = await self._store.start(runs.EventStart(event.event_id, tuple(fresh)))
        for workflow, new, inserted in zip(matched, fresh, stored, strict=True):
            run_id = new.record.id
            await self._isolated(
                run_id,
                partial(self._begin, workflow, inserted, deliveries),
                again=partial(self._carry_on, run_id, deliveries),
                fresh=new.record,
                workflow_id=workflow.id,
            )
        return len(matched)

    def _new_run(
        self, event: events.Event, workflow: ActiveWorkflow, deliveries: int
    ) -> runs.NewRun:
        payload = event.payload
        run_id = run_id_for(event.event_id, workflow.id)
        first = machine.start(workflow.definition)
        assert isinstance(first, machine.RunStep)
        context = _first_context(event, str(workflow.id), str(run_id))
        record = RunRecord(
            id=run_id,
            workflow_id=workflow.id,
            workflow_version=workflow.version,
            submission_id=UUID(payload["submission_id"]) if payload.get("submission_id") else None,
            event_id=event.event_id,
            org_id=payload.get("org_id"),
            status=RunStatus.RUNNING,
            current_step_id=first.step.id,
            step_seq=first.seq,
            deliveries=deliveries,
            context=context,
        )
        keys = gate_keys(workflow.definition, context, payload.get("org_id"))
        if keys is not None:  # it queues until its gate lets it in (_begin): nothing reserved
            queued_at = parse_timestamp(payload.get("submitted_at")) or self._now()
            return runs.NewRun(
                replace(
                    record,
                    status=RunStatus.WAITING,
                    concurrency_key=keys.concurrency,
                    throttle_key=keys.throttle,
                    queued_for=keys.first_reason,
                    queued_at=queued_at,
                )
            )
        return runs.NewRun(record, _leading_emails(run_id, first))

    async def _begin(
        self, workflow: ActiveWorkflow, inserted: runs.Inserted, deliveries: int
    ) -> None:
        run, definition = inserted.run, workflow.definition
        if run.queued_for is not None and run.status == RunStatus.WAITING:
            admitted = await self._admitted(run, definition)
            if admitted is None:
                return  # it waits its turn: a run that ends, or its throttle's timer, lets it in
            run = admitted
        elif not inserted.created:
            await self._carry_on(run.id, deliveries)
            return
        await self._drive(run, definition, Resumption(machine.start(definition)), {})

    async def _admitted(self, run: RunRecord, definition: WorkflowDefinition) -> RunRecord | None:
        """`run` (queued) as this worker's to drive when its gate lets it in now, else None."""
        gate = gate_of(definition)
        if gate is None:
            return None
        revision = await self._store.admit(run, gate, me=True)
        if revision is None:
            return None
        return replace(run, status=RunStatus.RUNNING, queued_for=None, revision=revision)

    async def _drive(
        self,
        run: RunRecord,
        definition: WorkflowDefinition,
        resumption: Resumption,
        ledger: dict[str, Any],
        journal: Journal | None = None,
    ) -> None:
        """Drive the run to its next resting point; a run of a workflow with limits that
        ended frees its slot: the next queued runs of its keys are let in."""
        done = await self._stretches.drive(run, definition, resumption, ledger, journal)
        if done.finished and (gate := gate_of(definition)) is not None:
            await self._store.admit(done, gate, me=False)

    async def _carry_on(self, run_id: UUID, deliveries: int) -> None:
        """A run an earlier delivery started and left part-way (a crash): go on from where it
        was recorded. A run that moved on elsewhere meanwhile is left alone."""
        run = await self._store.load(run_id)
        if run is None or run.status != RunStatus.RUNNING:
            return
        definition = await self._catalog.definition(run.workflow_id, run.workflow_version)
        run = replace(run, deliveries=max(run.deliveries, deliveries))
        step = definition.step(run.current_step_id or definition.initial_step_id)
        await self._drive(
            run,
            definition,
            Resumption(machine.RunStep(step, _visit(run, step))),
            await self._store.effects(run.id),
        )

    async def resume(self, event: events.Event, deliveries: int) -> None:
        """Wake a run: its task was settled, its wait is over, an action (or the assignee's
        email) is due for another attempt, or it was left running by a worker that died.
        Stale wake-ups (the run moved on) are ignored."""
        run_id = UUID(event.payload["run_id"])
        await self._isolated(run_id, partial(self._resume, run_id, event, deliveries))

    async def _resume(self, run_id: UUID, event: events.Event, deliveries: int) -> None:
        payload, cause = event.payload, event.payload["cause"]
        if cause in {"recover", "admitted"}:  # admitted: let in by another worker
            await self._carry_on(run_id, deliveries)
            await self._store.taken(event.event_id)
            return
        if cause == "admit":  # a throttle's window has room, or the sweep found it queued
            await self._admit_queued(run_id, event.event_id)
            return
        run = await self._store.load(run_id)
        if run is not None and not run.finished and _maybe_in_parallel(run):
            definition = await self._catalog.definition(run.workflow_id, run.workflow_version)
            step = definition.step(run.current_step_id or definition.initial_step_id)
            if step.type == "parallel":
                await self._resume_branch(run, definition, step, event, deliveries)
                return
        if (
            run is None
            or run.status != RunStatus.WAITING
            or payload.get("step_seq") != run.step_seq
        ):
            log.debug("resume_ignored", run_id=str(run_id), cause=cause)
            await self._store.taken(event.event_id)
            return
        definition = await self._catalog.definition(run.workflow_id, run.workflow_version)
        step = definition.step(run.current_step_id or definition.initial_step_id)
        if cause == "notify":
            await self._notify(run, step, run.step_seq, event)
            return
        run = replace(run, status=RunStatus.RUNNING, deliveries=max(run.deliveries, deliveries))
        journal = Journal(taken=[event.event_id])
        woken = await self._woken(definition, step, run.step_seq, run, event, journal)
        if woken is None:
            await self._store.taken(event.event_id)
            return
        run, resumption = woken
        await self._drive(run, definition, resumption, await self._store.effects(run.id), journal)

    async def _notify(self, run: RunRecord, step: StepSpec, seq: int, event: events.Event) -> None:
        """Email a waiting task's assignee (a notice's own timer: its first go, or another after
        a passing failure); the run stays where it waits."""
        payload = event.payload
        await self._stretches.notify(
            run, step, seq, UUID(payload["task_id"]), int(payload["attempt"])
        )
        await self._store.taken(event.event_id)

    async def _admit_queued(self, run_id: UUID, event_id: UUID) -> None:
        """Try the gate for a queued run (and the others of its keys); drive it if let in."""
        run = await self._store.load(run_id)
        admitted = None
        if run is not None and run.status == RunStatus.WAITING and run.queued_for is not None:
            definition = await self._catalog.definition(run.workflow_id, run.workflow_version)
            admitted = await self._admitted(run, definition)
        if admitted is None:
            await self._store.taken(event_id)
            return
        journal = Journal(taken=[event_id])
        await self._drive(admitted, definition, Resumption(machine.start(definition)), {}, journal)

    async def _resume_branch(
        self,
        run: RunRecord,
        definition: WorkflowDefinition,
        step: StepSpec,
        event: events.Event,
        deliveries: int,
    ) -> None:
        """Wake one branch of a parallel step. The run is first claimed (moved to `running`,
        with the woken branch's new place) so that one worker at a time drives its branches;
        a wake-up that finds it driven elsewhere is put off by a second, on a timer."""
        payload, cause = event.payload, event.payload["cause"]
        cursor = parallel.waiting_at(run.context, step.id, int(payload.get("step_seq", -1)))
        if cursor is None:
            log.debug("resume_ignored", run_id=str(run.id), cause=cause)
            await self._store.taken(event.event_id)
            return
        branch_step = definition.step(cursor.step)
        if cause == "notify":
            await self._notify(run, branch_step, cursor.seq, event)
            return
        if run.status != RunStatus.WAITING:
            await self._put_off(run, event)
            return
        run = replace(run, status=RunStatus.RUNNING, deliveries=max(run.deliveries, deliveries))
        journal = Journal(taken=[event.event_id])
        woken = await self._woken(definition, branch_step, cursor.seq, run, event, journal)
        if woken is None:
            await self._store.taken(event.event_id)
            return
        run, resumption = woken
        decision = resumption.decision
        if isinstance(decision, machine.RunStep) and decision.seq == cursor.seq:
            context = parallel.resumed(run.context, step.id, cursor.branch)  # an action's retry
        else:
            context = parallel.moved(run.context, step.id, cursor.branch, decision)
        if isinstance(decision, machine.RunStep):
            run = replace(run, step_seq=max(run.step_seq, decision.seq))
        run = await self._store.checkpoint(replace(run, context=context), journal)
        entry = machine.RunStep(step, _visit(run, step))
        await self._drive(
            run,
            definition,
            replace(resumption, decision=entry, branch=cursor.branch),
            await self._store.effects(run.id),
            Journal(),
        )

    async def _put_off(self, run: RunRecord, event: events.Event) -> None:
        """Another worker drives the run's branches: wake this one again in a second."""
        payload = {key: value for key, value in event.payload.items() if key not in _ENVELOPE}
        journal = Journal()
        journal.timer(run.id, event.payload["cause"], payload, after=PUT_OFF_SECONDS)
        await self._store.record(run, journal)
        await self._store.taken(event.event_id)

    # -- one run at a time, and its failures its own ------------------------------------------

    async def _isolated(
        self,
        run_id: UUID,
        work: Work,
        *,
        again: Work | None = None,
        fresh: RunRecord | None = None,
        workflow_id: UUID | None = None,
    ) -> None:
        """Do `work` on the run (and `again`, after losing a race on it to another worker); an
        error of the run's own fails it with the reason (the event goes on to its other runs
        and is acknowledged). The database being away, or the run's failure not being
        recordable, is raised: the event is delivered again."""
        attributes = {"flowline.run_id": run_id, "flowline.workflow_id": workflow_id}
        try:
            with bound(run_id=str(run_id)), tracing.span("run", attributes):
                await self._exclusively(run_id, work, again or work)
        except (Unavailable, runs.StaleRun):
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"[:2000]
            log.exception("run_failed_unexpectedly", run_id=str(run_id), error=reason)
            await self._store.fail(run_id, reason, fresh=fresh)
            await self._free_slot(run_id)
        finally:
            try:
                await self._ledger.release_held(run_id)
            except Unavailable as error:  # they stay ours; this process takes them when it can
                log.warning("reservations_not_released", run_id=str(run_id), error=str(error))

    async def _free_slot(self, run_id: UUID) -> None:
        """A run of a workflow with limits that failed outside the engine lets the next of its
        queue in too (should this fail, the reconcile sweep finds the queue)."""
        try:
            run = await self._store.load(run_id)
            if run is None or (run.concurrency_key is None and run.throttle_key is None):
                return
            definition = await self._catalog.definition(run.workflow_id, run.workflow_version)
            if (gate := gate_of(definition)) is not None:
                await self._store.admit(run, gate, me=False)
        except Exception as error:
            log.warning("queue_not_advanced", run_id=str(run_id), error=str(error))

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


def _maybe_in_parallel(run: RunRecord) -> bool:
    """True when the run's current step looks like a parallel step under way (read from the
    context alone, so that a stale wake-up of another run needs no definition)."""
    state = parallel.state(run.context, run.current_step_id or "")
    return state is not None and state.get("status") == parallel.RUNNING


def _visit(run: RunRecord, step: StepSpec) -> int:
    """The visit of `step` the run is in: a parallel step's own number, not its branches'."""
    state = parallel.state(run.context, step.id) if step.type == "parallel" else None
    return state["seq"] if state is not None else run.step_seq


def _first_context(event: events.Event, workflow_id: str, run_id: str) -> dict[str, Any]:
    if event.type == events.POSTED:
        return posted_event_context(event=event.payload, workflow_id=workflow_id, run_id=run_id)
    return initial_context(
        submission=event.payload, workflow_id=workflow_id, run_id=run_id, event_type=event.type
    )


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
