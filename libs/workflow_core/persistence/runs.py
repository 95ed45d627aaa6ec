"""Runs and their history. A run's progress is written in checkpoints: one transaction holding
the run's new state and everything that happened since the last one (steps entered and left,
action attempts, effects done, tasks and timers created, events to publish)."""

from __future__ import annotations

import functools
import itertools
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


_RUN_SPEC = ", ".join(
    f"{name} {kind}"
    for name, kind in (
        ("id", "uuid"),
        ("workflow_id", "uuid"),
        ("workflow_version", "int"),
        ("submission_id", "uuid"),
        ("event_id", "uuid"),
        ("org_id", "text"),
        ("status", "text"),
        ("current_step_id", "text"),
        ("step_seq", "int"),
        ("context", "jsonb"),
        ("error", "text"),
        ("deliveries", "int"),
    )
)
_INSERT = f"""
    WITH fresh AS (
        INSERT INTO runs ({", ".join(_INSERTED)})
        SELECT {", ".join(_INSERTED)} FROM jsonb_to_recordset($1::jsonb) AS x({_RUN_SPEC})
        ON CONFLICT DO NOTHING
        RETURNING id
    ), held AS (
        INSERT INTO effects (key, run_id, state, owner)
        SELECT h.key, h.run_id, 'reserved', $3
        FROM jsonb_to_recordset($2::jsonb) AS h(key text, run_id uuid)
        WHERE h.run_id IN (SELECT id FROM fresh)
        ON CONFLICT (key) DO NOTHING
        RETURNING key, run_id
    )
    SELECT fresh.id, ARRAY(SELECT key FROM held WHERE held.run_id = fresh.id) AS held FROM fresh
"""
_SELECT = f"SELECT {', '.join(_RUN_FIELDS)} FROM runs WHERE id = ANY($1::uuid[])"


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create, and the effects (emails) of its first step to reserve for `owner` in
    the same statement: the reservation costs no round trip of its own."""

    record: RunRecord
    reserve: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Inserted:
    run: RunRecord
    created: bool
    held: frozenset[str] = frozenset()
    """The reservations taken with it (none for a run that existed)."""


async def insert_many(pg: Pool | Connection, fresh: list[NewRun], *, owner: str) -> list[Inserted]:
    """Create the runs that do not exist yet (a redelivered event finds its run) with their
    reservations; returns each run as stored and whether it is new. One statement for all
    (two when some existed). A new run is stored as given (revision 0): only its id comes
    back."""
    rows = [{name: getattr(new.record, name) for name in _INSERTED} for new in fresh]
    holds = [{"key": key, "run_id": new.record.id} for new in fresh for key in new.reserve]
    created = {
        row["id"]: frozenset(row["held"])
        for row in await pg.fetch(_INSERT, json_text(rows), json_text(holds), owner)
    }
    missing = [new.record.id for new in fresh if new.record.id not in created]
    existing = (
        {row["id"]: _from_pg(row) for row in await pg.fetch(_SELECT, missing)} if missing else {}
    )
    answer = []
    for new in fresh:
        run_id = new.record.id
        if run_id in created:
            answer.append(Inserted(replace(new.record, revision=0), True, created[run_id]))
        elif run_id in existing:
            answer.append(Inserted(existing[run_id], False))
        else:  # the same event and workflow under another id: cannot happen
            raise Conflict(f"run {run_id} conflicts with an existing run")
    return answer


async def insert_if_absent(
    pg: Pool | Connection, run: RunRecord, *, reserve: tuple[str, ...] = (), owner: str = ""
) -> Inserted:
    """Create the run unless it exists (a redelivered event), reserving `reserve` for `owner`
    if it is new."""
    [answer] = await insert_many(pg, [NewRun(run, reserve)], owner=owner)
    return answer


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
_MOVE_SPEC = (
    "id uuid, revision int, status text, current_step_id text, step_seq int, "
    "context jsonb, error text, deliveries int, finished bool"
)


def _rows_of(table: str, parameter: int, spec: str, tail: str) -> str:
    # Each row names its run (`owner`); it is written only if that run's UPDATE matched.
    return (
        f"INSERT INTO {table} ({_columns(spec)}) SELECT {_columns(spec)} "
        f"FROM jsonb_to_recordset(${parameter}::jsonb) AS x(owner uuid, {spec}) "
        f"WHERE x.owner IN (SELECT id FROM moved) {tail}"
    )


@functools.cache
def _checkpoint_statement(present: tuple[bool, ...]) -> str:
    """One statement that moves runs (each only if its revision still matches) and writes the
    parts of their journals that have rows. A handful of shapes occur (a step with actions, a
    waiting step ...); each is prepared once per connection."""
    ctes = [
        f"input AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS u({_MOVE_SPEC}))",
        "moved AS (UPDATE runs SET status = u.status, current_step_id = u.current_step_id, "
        "step_seq = u.step_seq, context = u.context, error = u.error, "
        "deliveries = u.deliveries, revision = runs.revision + 1, updated_at = now(), "
        "finished_at = CASE WHEN u.finished THEN now() END FROM input u "
        # `= ANY` keeps the plan an index lookup however large `runs` grows (a cached generic
        # plan would otherwise hash-join a full scan of it for every batch).
        "WHERE runs.id = ANY($2::uuid[]) AND runs.id = u.id AND runs.revision = u.revision "
        "RETURNING runs.id, runs.revision)",
    ]
    parameter = 3
    for (name, table, spec, tail), has_rows in zip(_PARTS, present, strict=True):
        if has_rows:
            ctes.append(f"{name} AS ({_rows_of(table, parameter, spec, tail)})")
            parameter += 1
    return f"WITH {', '.join(ctes)} SELECT id, revision FROM moved"


def _step_rows(journal: Journal) -> list[dict[str, Any]]:
    """One row per step visit: a visit entered and left in one stretch appears once, with
    the time it was entered and the state it was left in."""
    merged: dict[int, dict[str, Any]] = {}
    for row in journal.steps:
        first = merged.get(row["seq"])
        merged[row["seq"]] = {**row, "entered_at": first["entered_at"]} if first else row
    return list(merged.values())


def _journal_parts(run: RunRecord, journal: Journal) -> tuple[list[dict[str, Any]], ...]:
    attempts = [
        {**row, "delivery": row.get("delivery") or run.deliveries} for row in journal.actions
    ]
    done = list({row["key"]: row for row in journal.effects_done}.values())
    queued = [
        {"event_id": e.event_id, "event_type": e.type, "payload": e.payload} for e in journal.events
    ]
    parts = (_step_rows(journal), attempts, done, journal.tasks, journal.timers, queued)
    return tuple([{**row, "owner": run.id} for row in rows] for rows in parts)


async def checkpoint_many(
    pg: Pool | Connection, items: list[tuple[RunRecord, Journal]]
) -> list[RunRecord | StaleRun]:
    """Write each run's new state with its journal, all in one statement. A run someone else
    wrote since its `revision` was read gets `StaleRun` (and nothing of its journal is
    written); the others come back with their new revision, journals cleared."""
    moves = [
        {
            "id": run.id,
            "revision": run.revision,
            "status": run.status,
            "current_step_id": run.current_step_id,
            "step_seq": run.step_seq,
            "context": run.context,
            "error": run.error,
            "deliveries": run.deliveries,
            "finished": run.finished,
        }
        for run, _ in items
    ]
    parts: list[list[dict[str, Any]]] = [
        list(itertools.chain.from_iterable(rows))
        for rows in zip(*(_journal_parts(run, j) for run, j in items), strict=True)
    ]
    rows = await pg.fetch(
        _checkpoint_statement(tuple(bool(p) for p in parts)),
        json_text(moves),
        [run.id for run, _ in items],
        *(json_text(p) for p in parts if p),
    )
    revisions = {row["id"]: row["revision"] for row in rows}
    answer: list[RunRecord | StaleRun] = []
    for run, journal in items:
        if run.id in revisions:
            journal.clear()
            answer.append(replace(run, revision=revisions[run.id]))
        else:
            answer.append(StaleRun(f"run {run.id} was changed by another worker"))
    return answer


async def checkpoint(pg: Pool | Connection, run: RunRecord, journal: Journal) -> RunRecord:
    """Write the run's new state and its journal in one statement; `StaleRun` if someone else
    wrote the run since `run.revision` was read (then nothing here is written)."""
    [moved] = await checkpoint_many(pg, [(run, journal)])
    if isinstance(moved, StaleRun):
        raise moved
    return moved


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
