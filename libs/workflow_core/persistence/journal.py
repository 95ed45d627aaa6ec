"""What one stretch of a run did, as rows for its checkpoint (persistence/runs.py): steps
entered and left, action attempts, effects done, tasks and timers created, event waits begun,
events to publish, and events handled. The row builders live here, so the runner says what
happened, not how it is stored.

Timer and task rows carry their due time as seconds (`delay`, `due_in`), which the checkpoint
counts from the database's clock, or as an absolute `due_at` taken from the run's data: a
worker's clock never sets a due time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from workflow_core import tracing
from workflow_core.actions.base import ActionCall
from workflow_core.definitions import StepSpec
from workflow_core.engine import machine
from workflow_core.events import Event
from workflow_core.ids import derived_id, new_id
from workflow_core.statuses import AttemptStatus, StepStatus, TaskKind, TaskStatus


class RunLike(Protocol):
    @property
    def id(self) -> UUID: ...
    @property
    def workflow_id(self) -> UUID: ...
    @property
    def submission_id(self) -> UUID | None: ...
    @property
    def org_id(self) -> str | None: ...


@dataclass(slots=True)
class Journal:
    steps: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    effects_done: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    timers: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    waits: list[dict[str, Any]] = field(default_factory=list)
    """Event waits begun (wait_for_event steps)."""
    taken: list[UUID] = field(default_factory=list)
    """Events this stretch handled (a resume): marked taken with it."""
    cancelled: list[dict[str, Any]] = field(default_factory=list)
    """Step visits whose pending task and timers are cancelled (a parallel step's branches
    left open when it ended)."""

    def clear(self) -> None:
        for rows in (
            self.steps,
            self.actions,
            self.effects_done,
            self.tasks,
            self.timers,
            self.events,
            self.waits,
            self.taken,
            self.cancelled,
        ):
            rows.clear()

    def effect_keys(self) -> list[str]:
        return [row["key"] for row in self.effects_done]

    # -- what happened ------------------------------------------------------------------------

    def step_entered(self, run_id: UUID, seq: int, step: StepSpec, now: datetime) -> None:
        self.steps.append(_step_row(run_id, seq, step, StepStatus.RUNNING, now))

    def step_waiting(self, run_id: UUID, seq: int, step: StepSpec, now: datetime) -> None:
        """The step waits (a parallel step whose open branches all wait)."""
        self.steps.append(_step_row(run_id, seq, step, StepStatus.WAITING, now))

    def step_failed(
        self, run_id: UUID, seq: int, step: StepSpec, entered: datetime, now: datetime, error: str
    ) -> None:
        self.steps.append(
            _step_row(run_id, seq, step, StepStatus.FAILED, entered, finished=now, error=error)
        )

    def step_cancelled(
        self, run_id: UUID, seq: int, step: StepSpec, entered: datetime, now: datetime
    ) -> None:
        """The run was cancelled while in this step (POST /runs/{id}/cancel)."""
        self.steps.append(
            _step_row(
                run_id, seq, step, StepStatus.CANCELLED, entered, finished=now, error="cancelled"
            )
        )

    def step_left(
        self,
        run_id: UUID,
        seq: int,
        step: StepSpec,
        decision: machine.Decision,
        entered: datetime,
        now: datetime,
    ) -> None:
        """The step's actions are done and `decision` says what follows."""
        if isinstance(decision, machine.OpenTask | machine.Sleep | machine.AwaitEvent):
            row = _step_row(run_id, seq, step, StepStatus.WAITING, entered)
        elif isinstance(decision, machine.Fail):
            row = _step_row(
                run_id, seq, step, StepStatus.FAILED, entered, finished=now, error=decision.reason
            )
        else:
            target = decision.step.id if isinstance(decision, machine.RunStep) else None
            row = _step_row(
                run_id, seq, step, StepStatus.COMPLETED, entered, finished=now, transition_to=target
            )
        self.steps.append(row)

    def attempt(
        self,
        call: ActionCall,
        action_type: str,
        status: AttemptStatus,
        started: datetime,
        finished: datetime,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        self.actions.append(
            {
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
        )

    def done(self, call: ActionCall, result: dict[str, Any]) -> None:
        self.effects_done.append(
            {"key": call.key, "run_id": call.run_id, "state": "done", "result": result}
        )

    def task_opened(self, run: RunLike, decision: machine.OpenTask) -> dict[str, Any]:
        """A human task for `decision` (its id derived from the run step); returns its row."""
        row = {
            "id": derived_id(f"{run.id}/{decision.seq}/task"),
            "kind": TaskKind.HUMAN,
            "run_id": run.id,
            "workflow_id": run.workflow_id,
            "step_id": decision.step.id,
            "step_seq": decision.seq,
            "submission_id": run.submission_id,
            "org_id": run.org_id,
            "title": decision.title,
            "description": decision.description,
            "assignee": decision.assignee,
            "status": TaskStatus.PENDING,
            "due_in": _seconds(decision.due_in),
            "fields": _task_fields(decision),
        }
        self.tasks.append(row)
        return row

    def cancel_visits(self, run_id: UUID, seqs: list[int]) -> None:
        """Cancel the pending task, the timers and the event wait of these visits: those stored
        already when the checkpoint is written, those of this journal at once."""
        if not seqs:
            return
        for row in self.tasks:
            if row["run_id"] == run_id and row["step_seq"] in seqs:
                row["status"] = TaskStatus.CANCELLED
        self.timers[:] = [
            row
            for row in self.timers
            if row["run_id"] != run_id or row["payload"].get("step_seq") not in seqs
        ]
        self.waits[:] = [
            row for row in self.waits if row["run_id"] != run_id or row["step_seq"] not in seqs
        ]
        self.cancelled.extend({"run_id": run_id, "seq": seq} for seq in seqs)

    def event_awaited(self, run: RunLike, decision: machine.AwaitEvent) -> None:
        """The run waits for an event: its wait's row, a check for an event that came first
        (due at once), and its timeout."""
        self.waits.append(
            {
                "run_id": run.id,
                "step_seq": decision.seq,
                "org_id": run.org_id or "",
                "event_type": decision.event_type,
                "path": decision.path,
                "expected": decision.expected,
                "since": decision.since,
            }
        )
        payload = {"step_seq": decision.seq}
        self.timer(run.id, "event_check", payload, after=0)
        if decision.timeout is not None:
            self.timer(run.id, "event_timeout", payload, after=decision.timeout)

    def timer(
        self,
        run_id: UUID,
        kind: str,
        payload: dict[str, Any],
        *,
        at: datetime | None = None,
        after: timedelta | float | None = None,
    ) -> None:
        """A wake-up at a moment (`at`, from the run's data) or after a while (`after`). Its
        event continues the current trace (OTEL_ENABLED): a retried action joins the trace
        of its submission."""
        if tracing.ENABLED:
            payload = {**payload, **tracing.carried()}
        self.timers.append(
            {
                "id": new_id(),
                "run_id": run_id,
                "kind": kind,
                "at": at,
                "delay": _seconds(after) if after is not None else None,
                "payload": payload,
            }
        )


def _task_fields(decision: machine.OpenTask) -> dict[str, Any] | None:
    """What a human task keeps beside its columns: whom to email, the outcomes it accepts,
    the form fields its assignee sees."""
    fields: dict[str, Any] = {}
    if decision.assignee_email:
        fields["assignee_email"] = decision.assignee_email
    if decision.outcomes:
        fields["outcomes"] = list(decision.outcomes)
    if decision.shown:
        fields["shown"] = [{"name": name, "value": value} for name, value in decision.shown]
    return fields or None


def _seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


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
