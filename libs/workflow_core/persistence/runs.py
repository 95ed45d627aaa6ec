"""Runs and their history. A run's progress is written in checkpoints: one transaction holding
the run's new state and everything that happened since the last one (steps entered and left,
action attempts, effects done, tasks and timers created, events to publish)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from workflow_core.errors import Conflict
from workflow_core.events import Event
from workflow_core.persistence import outbox
from workflow_core.persistence.tables import effects, run_actions, run_steps, runs, tasks, timers

RUNNING, WAITING, COMPLETED, FAILED = "running", "waiting", "completed", "failed"
FINISHED = frozenset({COMPLETED, FAILED})
STATUSES = (RUNNING, WAITING, COMPLETED, FAILED)


class StaleRun(Conflict):
    """Another worker moved this run on since it was loaded."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: UUID
    workflow_id: UUID
    workflow_version: int
    submission_id: UUID | None
    event_id: UUID
    org_id: str | None
    status: str
    current_step_id: str | None
    step_seq: int
    context: dict[str, Any]
    error: str | None = None
    deliveries: int = 1
    revision: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


_RUN_FIELDS = tuple(RunRecord.__dataclass_fields__)


def _record(row: Any) -> RunRecord:
    mapping = row._mapping
    return RunRecord(**{name: mapping[name] for name in _RUN_FIELDS})


async def insert_if_absent(conn: AsyncConnection, run: RunRecord) -> tuple[RunRecord, bool]:
    """Create the run unless it exists (a redelivered event); returns it and whether it is new."""
    values = {
        name: getattr(run, name)
        for name in _RUN_FIELDS
        if name not in {"created_at", "updated_at", "finished_at", "revision"}
    }
    row = (
        await conn.execute(
            insert(runs).values(**values).on_conflict_do_nothing().returning(*runs.c)
        )
    ).first()
    if row is not None:
        return _record(row), True
    existing = await get(conn, run.id)
    if existing is None:  # the same event and workflow under another id: cannot happen
        raise Conflict(f"run {run.id} conflicts with an existing run")
    return existing, False


async def get(conn: AsyncConnection, run_id: UUID, *, for_update: bool = False) -> RunRecord | None:
    query = select(runs).where(runs.c.id == run_id)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _record(row) if row else None


@dataclass(slots=True)
class Journal:
    """What one stretch of a run did, written together by `checkpoint`."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    effects_done: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    timers: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def clear(self) -> None:
        for rows in (
            self.steps,
            self.actions,
            self.effects_done,
            self.tasks,
            self.timers,
            self.events,
        ):
            rows.clear()


async def checkpoint(conn: AsyncConnection, run: RunRecord, journal: Journal) -> RunRecord:
    """Write the run's new state and its journal; `StaleRun` if someone else wrote the run
    since `run.revision` was read (then nothing here is written)."""
    new_revision = (
        await conn.execute(
            update(runs)
            .where(runs.c.id == run.id, runs.c.revision == run.revision)
            .values(
                status=run.status,
                current_step_id=run.current_step_id,
                step_seq=run.step_seq,
                context=run.context,
                error=run.error,
                deliveries=run.deliveries,
                revision=runs.c.revision + 1,
                updated_at=func.now(),
                finished_at=func.now() if run.finished else None,
            )
            .returning(runs.c.revision)
        )
    ).scalar()
    if new_revision is None:
        raise StaleRun(f"run {run.id} was changed by another worker")
    if journal.steps:
        statement = insert(run_steps)
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=["run_id", "seq"],
                set_={
                    name: statement.excluded[name]
                    for name in ("status", "finished_at", "transition_to", "error")
                },
            ),
            journal.steps,
        )
    if journal.actions:
        # Each attempt records which delivery of the event carried it (1 unless redelivered).
        attempts = [
            {**row, "delivery": row.get("delivery") or run.deliveries} for row in journal.actions
        ]
        await conn.execute(insert(run_actions), attempts)
    if journal.effects_done:
        statement = insert(effects)
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=["key"],
                set_={
                    "state": statement.excluded.state,
                    "result": statement.excluded.result,
                    "updated_at": func.now(),
                },
            ),
            journal.effects_done,
        )
    if journal.tasks:
        await conn.execute(insert(tasks).on_conflict_do_nothing(), journal.tasks)
    if journal.timers:
        await conn.execute(insert(timers).on_conflict_do_nothing(), journal.timers)
    for event in journal.events:
        await outbox.add(conn, event)
    journal.clear()
    return replace(run, revision=new_revision)


async def history(
    conn: AsyncConnection, run_id: UUID
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    steps = await conn.execute(
        select(run_steps).where(run_steps.c.run_id == run_id).order_by(run_steps.c.seq)
    )
    attempts = await conn.execute(
        select(run_actions)
        .where(run_actions.c.run_id == run_id)
        .order_by(
            run_actions.c.step_seq,
            run_actions.c.action_index,
            run_actions.c.attempt,
            run_actions.c.id,
        )
    )
    return [dict(row._mapping) for row in steps], [dict(row._mapping) for row in attempts]


async def for_submission(conn: AsyncConnection, submission_id: UUID) -> list[RunRecord]:
    query = select(runs).where(runs.c.submission_id == submission_id).order_by(runs.c.created_at)
    return [_record(row) for row in await conn.execute(query)]


async def list_runs(
    conn: AsyncConnection,
    *,
    workflow_id: UUID | None = None,
    status: str | None = None,
    submission_id: UUID | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[RunRecord]:
    query = select(runs)
    if workflow_id is not None:
        query = query.where(runs.c.workflow_id == workflow_id)
    if status is not None:
        query = query.where(runs.c.status == status)
    if submission_id is not None:
        query = query.where(runs.c.submission_id == submission_id)
    query = query.order_by(runs.c.created_at.desc(), runs.c.id).limit(limit).offset(offset)
    return [_record(row) for row in await conn.execute(query)]


async def mark_failed(conn: AsyncConnection, run_id: UUID, reason: str) -> bool:
    """Fail a run that is not finished (used when its event is dead-lettered)."""
    result = await conn.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.status.notin_(FINISHED))
        .values(
            status=FAILED,
            error=reason,
            revision=runs.c.revision + 1,
            updated_at=func.now(),
            finished_at=func.now(),
        )
        .returning(runs.c.id)
    )
    return result.first() is not None
