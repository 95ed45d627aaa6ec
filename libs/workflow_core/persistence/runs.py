"""Runs and their history. A run's progress is written in checkpoints: one transaction holding
the run's new state and everything that happened since the last one (steps entered and left,
action attempts, effects done, tasks and timers created, events to publish)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from workflow_core.errors import Conflict
from workflow_core.events import Event
from workflow_core.persistence.pg import Connection, Pool, json_text
from workflow_core.persistence.tables import run_actions, run_steps, runs

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
_INSERTED = tuple(
    n for n in _RUN_FIELDS if n not in {"created_at", "updated_at", "finished_at", "revision"}
)


def _record(row: Any) -> RunRecord:
    mapping = row._mapping
    return RunRecord(**{name: mapping[name] for name in _RUN_FIELDS})


_INSERT = f"""
    INSERT INTO runs ({", ".join(_INSERTED)})
    VALUES ({
    ", ".join(
        f"${n}" + ("::jsonb" if name == "context" else "") for n, name in enumerate(_INSERTED, 1)
    )
})
    ON CONFLICT DO NOTHING
    RETURNING {", ".join(_RUN_FIELDS)}
"""
_SELECT = f"SELECT {', '.join(_RUN_FIELDS)} FROM runs WHERE id = $1"


async def insert_if_absent(pg: Pool | Connection, run: RunRecord) -> tuple[RunRecord, bool]:
    """Create the run unless it exists (a redelivered event); returns it and whether it is new.
    One statement on the hot path."""
    values = [
        json_text(run.context) if name == "context" else getattr(run, name) for name in _INSERTED
    ]
    row = await pg.fetchrow(_INSERT, *values)
    if row is not None:
        return _from_pg(row), True
    existing = await pg.fetchrow(_SELECT, run.id)
    if existing is None:  # the same event and workflow under another id: cannot happen
        raise Conflict(f"run {run.id} conflicts with an existing run")
    return _from_pg(existing), False


def _from_pg(row: Any) -> RunRecord:
    values = dict(row)
    if isinstance(values["context"], str):
        values["context"] = orjson.loads(values["context"])
    return RunRecord(**values)


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


def _columns(spec: str) -> str:
    return ", ".join(part.split()[0] for part in spec.split(","))


_STEP_COLUMNS = (
    "run_id uuid, seq int, step_id text, step_type text, status text, "
    "entered_at timestamptz, finished_at timestamptz, transition_to text, error text"
)
_ACTION_COLUMNS = (
    "run_id uuid, step_seq int, step_id text, action_index int, action_type text, "
    "attempt int, status text, started_at timestamptz, finished_at timestamptz, "
    "result jsonb, error text, delivery int"
)
_EFFECT_COLUMNS = "key text, run_id uuid, state text, result jsonb"
_TASK_COLUMNS = (
    "id uuid, kind text, run_id uuid, workflow_id uuid, step_id text, step_seq int, "
    "submission_id uuid, org_id text, title text, description text, assignee text, "
    "status text, due_at timestamptz, created_at timestamptz, updated_at timestamptz, "
    "fields jsonb"
)
_TIMER_COLUMNS = "id uuid, run_id uuid, kind text, due_at timestamptz, payload jsonb"
_EVENT_COLUMNS = "event_id uuid, event_type text, payload jsonb"


def _rows_of(table: str, parameter: int, spec: str, tail: str = "") -> str:
    return (
        f"INSERT INTO {table} ({_columns(spec)}) SELECT {_columns(spec)} "
        f"FROM jsonb_to_recordset(${parameter}::jsonb) AS x({spec}) "
        f"WHERE EXISTS (SELECT 1 FROM moved) {tail}"
    )


_MOVE = """
    UPDATE runs SET status = $3, current_step_id = $4, step_seq = $5, context = $6::jsonb,
           error = $7, deliveries = $8, revision = revision + 1, updated_at = now(),
           finished_at = CASE WHEN $9 THEN now() END
    WHERE id = $1 AND revision = $2
    RETURNING revision
"""
# What a journal may hold: (CTE name, table, columns, conflict clause).
_PARTS = (
    (
        "steps",
        "run_steps",
        _STEP_COLUMNS,
        "ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status, "
        "finished_at = excluded.finished_at, transition_to = excluded.transition_to, "
        "error = excluded.error",
    ),
    ("attempts", "run_actions", _ACTION_COLUMNS, ""),
    (
        "done",
        "effects",
        _EFFECT_COLUMNS,
        "ON CONFLICT (key) DO UPDATE SET state = excluded.state, result = excluded.result, "
        "updated_at = now()",
    ),
    ("opened", "tasks", _TASK_COLUMNS, "ON CONFLICT DO NOTHING"),
    ("timed", "timers", _TIMER_COLUMNS, "ON CONFLICT DO NOTHING"),
    ("queued", "outbox", _EVENT_COLUMNS, ""),
)


@functools.cache
def _checkpoint_statement(present: tuple[bool, ...]) -> str:
    """One statement that writes the run and the parts of its journal that have rows, or (a
    stale revision) nothing: each insert happens only when the run's UPDATE matched. A handful
    of shapes occur (a step with actions, a waiting step ...); each is prepared once per
    connection."""
    ctes = [f"moved AS ({_MOVE})"]
    parameter = 10
    for (name, table, spec, tail), has_rows in zip(_PARTS, present, strict=True):
        if has_rows:
            ctes.append(f"{name} AS ({_rows_of(table, parameter, spec, tail)})")
            parameter += 1
    return f"WITH {', '.join(ctes)} SELECT revision FROM moved"


def _step_rows(journal: Journal) -> list[dict[str, Any]]:
    """One row per step visit: a visit entered and left in one stretch appears once, with
    the time it was entered and the state it was left in."""
    merged: dict[int, dict[str, Any]] = {}
    for row in journal.steps:
        first = merged.get(row["seq"])
        merged[row["seq"]] = {**row, "entered_at": first["entered_at"]} if first else row
    return list(merged.values())


async def checkpoint(pg: Pool | Connection, run: RunRecord, journal: Journal) -> RunRecord:
    """Write the run's new state and its journal in one statement; `StaleRun` if someone else
    wrote the run since `run.revision` was read (then nothing here is written)."""
    attempts = [
        {**row, "delivery": row.get("delivery") or run.deliveries} for row in journal.actions
    ]
    done = list({row["key"]: row for row in journal.effects_done}.values())
    queued = [
        {"event_id": e.event_id, "event_type": e.type, "payload": e.payload} for e in journal.events
    ]
    parts = (_step_rows(journal), attempts, done, journal.tasks, journal.timers, queued)
    new_revision = await pg.fetchval(
        _checkpoint_statement(tuple(bool(rows) for rows in parts)),
        run.id,
        run.revision,
        run.status,
        run.current_step_id,
        run.step_seq,
        json_text(run.context),
        run.error,
        run.deliveries,
        run.finished,
        *(json_text(rows) for rows in parts if rows),
    )
    if new_revision is None:
        raise StaleRun(f"run {run.id} was changed by another worker")
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
