"""What a wake-up of a waiting run means: whether it is the one to carry the visit on (its
task settled, its event or its timeout came, its wait is over, an action is due again) and
with what in the run's context. Apart from runner.py, which decides which run a wake-up is
for and drives it; this part only reads the task or event wait it names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from services.worker.store import RunStore
from services.worker.stretch import Resumption
from workflow_core import events
from workflow_core.definitions import StepSpec, WorkflowDefinition
from workflow_core.engine import machine
from workflow_core.log import get_logger
from workflow_core.persistence import human_tasks, posted_events
from workflow_core.persistence.journal import Journal
from workflow_core.persistence.runs import RunRecord
from workflow_core.statuses import SETTLED_TASKS

log = get_logger(__name__)

EVENT_WAKEUPS = frozenset({"event_check", "event", "event_timeout"})
"""Wake-ups of a run in a wait_for_event step (persistence/posted_events.py)."""


class WakeUps:
    """Part of `RunDriver` (runner.py): it reads the driver's store, step budget and clock."""

    _store: RunStore
    _budget: int
    _now: Callable[[], datetime]

    async def _after_waiting(
        self, run: RunRecord, step: StepSpec, seq: int, payload: dict[str, Any], cause: str
    ) -> RunRecord | None:
        """The run with what visit `seq` waited for in its context; None when this wake-up is
        not the one to carry it on (its task is still pending, the other outcome of its event
        wait came first, an unknown cause)."""
        if cause == "wait":
            return run
        if cause in {"task", "task_due"}:
            task = await self._settled_task(
                UUID(payload["task_id"]), run, seq, time_out=cause == "task_due"
            )
            if task is None:
                return None
            return replace(
                run, context=machine.with_task_result(run.context, human_tasks.as_context(task))
            )
        if cause in EVENT_WAKEUPS:
            return await self._awaited_event(run, step, seq, cause)
        log.warning("resume_cause_unknown", run_id=str(run.id), cause=cause)
        return None

    async def _awaited_event(
        self, run: RunRecord, step: StepSpec, seq: int, cause: str
    ) -> RunRecord | None:
        """The run with its wait_for_event step's outcome in its context, when this wake-up is
        the one to carry it on: an `event_check` that found an event received before the wait
        began, the `event` that settled it, or the `event_timeout` that did. None otherwise
        (the wait is still open, or the other outcome won)."""
        wait = await self._store.event_wait(
            run.id,
            seq,
            look_back=cause == "event_check",
            time_out=cause == "event_timeout",
        )
        if wait is None or wait["settled_at"] is None:
            return None
        timed_out = wait["outcome"] == posted_events.TIMED_OUT
        if timed_out != (cause == "event_timeout"):
            return None
        event = None if timed_out else wait["event"]
        return replace(run, context=machine.with_event_result(run.context, step.id, event))

    async def _woken(
        self,
        definition: WorkflowDefinition,
        step: StepSpec,
        seq: int,
        run: RunRecord,
        event: events.Event,
        journal: Journal,
    ) -> tuple[RunRecord, Resumption] | None:
        """Where a woken visit `seq` of `step` goes on (None: the wake-up changes nothing)."""
        payload, cause = event.payload, event.payload["cause"]
        if cause == "retry":
            resumption = Resumption(
                machine.RunStep(step, seq),
                first_action=int(payload["action_index"]),
                attempt=int(payload["attempt"]),
            )
            return run, resumption
        waited = await self._after_waiting(run, step, seq, payload, cause)
        if waited is None:
            return None
        return waited, self._after_wait(definition, step, seq, waited, journal)

    async def _settled_task(
        self, task_id: UUID, run: RunRecord, seq: int, *, time_out: bool
    ) -> dict[str, Any] | None:
        """The task of the run's visit `seq` once completed or timed out (closing it first when
        its deadline fired); None while it is still pending or when it is not that visit's."""
        task = await self._store.task(task_id, time_out=time_out)
        if task is None or task["run_id"] != run.id or task["step_seq"] != seq:
            return None
        return task if task["status"] in SETTLED_TASKS else None

    def _after_wait(
        self,
        definition: WorkflowDefinition,
        step: StepSpec,
        seq: int,
        run: RunRecord,
        journal: Journal,
    ) -> Resumption:
        decision = machine.next_step(
            definition, step, seq, run.context, self._budget, last_seq=run.step_seq
        )
        now = self._now()
        journal.step_left(run.id, seq, step, decision, now, now)
        return Resumption(decision)
