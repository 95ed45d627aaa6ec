"""Runs and their history. A run's progress is written in checkpoints: one transaction holding
the run's new state and everything that happened since the last one (steps entered and left,
action attempts, effects done, tasks and timers created, events to publish)."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from workflow_core.errors import Conflict
from workflow_core.persistence.journal import Journal
from workflow_core.persistence.pg import Connection, Pool, json_text
from workflow_core.persistence.tables import run_actions, run_steps, runs
from workflow_core.statuses import FINISHED_RUNS, RunStatus


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
        return self.status in FINISHED_RUNS


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
        INSERT INTO runs ({", ".join(_INSERTED)}, owner)
        SELECT {", ".join(_INSERTED)}, $3 FROM jsonb_to_recordset($1::jsonb) AS x({_RUN_SPEC})
        ON CONFLICT DO NOTHING
        RETURNING id
    ), held AS (
        INSERT INTO effects (key, run_id, state, owner)
        SELECT h.key, h.run_id, 'reserved', $3
        FROM jsonb_to_recordset($2::jsonb) AS h(key text, run_id uuid)
        WHERE h.run_id IN (SELECT id FROM fresh)
        ON CONFLICT (key) DO NOTHING
        RETURNING key, run_id
    ), taken AS (
        UPDATE outbox SET taken_at = now()
        WHERE event_id = ANY($4::uuid[]) AND taken_at IS NULL
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
class EventStart:
    """An event taken by a worker with the runs it starts (none when no workflow matched):
    they are created, and the event marked taken, in one statement."""

    event_id: UUID
    runs: tuple[NewRun, ...] = ()


@dataclass(frozen=True, slots=True)
class Inserted:
    run: RunRecord
    created: bool
    held: frozenset[str] = frozenset()
    """The reservations taken with it (none for a run that existed)."""


async def start_events(
    pg: Pool | Connection, starts: list[EventStart], *, owner: str
) -> list[list[Inserted]]:
    """Mark the events taken and create their runs that do not exist yet (a redelivered event
    finds its runs) with their reservations; returns each run as stored and whether it is new.
    One statement for all (two when some runs existed). A new run is stored as given
    (revision 0): only its id comes back."""
    fresh = [new for start in starts for new in start.runs]
    rows = [{name: getattr(new.record, name) for name in _INSERTED} for new in fresh]
    holds = [{"key": key, "run_id": new.record.id} for new in fresh for key in new.reserve]
    created = {
        row["id"]: frozenset(row["held"])
        for row in await pg.fetch(
            _INSERT,
            json_text(rows),
            json_text(holds),
            owner,
            [start.event_id for start in starts],
        )
    }
    missing = [new.record.id for new in fresh if new.record.id not in created]
    existing = (
        {row["id"]: _from_pg(row) for row in await pg.fetch(_SELECT, missing)} if missing else {}
    )

    def stored(new: NewRun) -> Inserted:
        run_id = new.record.id
        if run_id in created:
            return Inserted(replace(new.record, revision=0), True, created[run_id])
        if run_id in existing:
            return Inserted(existing[run_id], False)
        # the same event and workflow under another id: cannot happen
        raise Conflict(f"run {run_id} conflicts with an existing run")

    return [[stored(new) for new in start.runs] for start in starts]


async def start_event(pg: Pool | Connection, start: EventStart, *, owner: str) -> list[Inserted]:
    """`start_events` for one event."""
    [answer] = await start_events(pg, [start], owner=owner)
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


def _columns(spec: str) -> str:
    return ", ".join(part.split()[0] for part in spec.split(","))


@dataclass(frozen=True, slots=True)
class _Part:
    """One kind of journal row: the CTE that writes it within a checkpoint."""

    name: str
    table: str
    spec: str
    """The columns as they come in (jsonb_to_recordset)."""
    tail: str = ""
    columns: str = ""
    """Written columns, when they differ from the incoming ones."""
    values: str = ""
    """What is selected for them, when it differs."""
    fact: bool = False
    """True of what happened whoever drives the run (an effect done, an attempt made): written
    even when the run's own move lost a race."""

    def statement(self, parameter: int, *, guarded: bool = True) -> str:
        columns = self.columns or _columns(self.spec)
        values = self.values or _columns(self.spec)
        # Other rows name their run (`owner`): written only if that run's UPDATE matched.
        guard = " WHERE x.owner IN (SELECT id FROM moved)" if guarded and not self.fact else ""
        return (
            f"INSERT INTO {self.table} ({columns}) SELECT {values} "
            f"FROM jsonb_to_recordset(${parameter}::jsonb) AS x(owner uuid, {self.spec})"
            f"{guard} {self.tail}"
        )


def _due(absolute: str, seconds: str) -> str:
    """A due time: `absolute`, else `seconds` from now by the database's clock (else NULL)."""
    return f"COALESCE({absolute or 'NULL'}, now() + make_interval(secs => {seconds}))"


_STEPS = _Part(
    "steps",
    "run_steps",
    "run_id uuid, seq int, step_id text, step_type text, status text, "
    "entered_at timestamptz, finished_at timestamptz, transition_to text, error text",
    "ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status, "
    "finished_at = excluded.finished_at, transition_to = excluded.transition_to, "
    "error = excluded.error",
)
_ATTEMPTS = _Part(
    "attempts",
    "run_actions",
    "run_id uuid, step_seq int, step_id text, action_index int, action_type text, "
    "attempt int, status text, started_at timestamptz, finished_at timestamptz, "
    "result jsonb, error text, delivery int",
    fact=True,
)
_DONE = _Part(
    "done",
    "effects",
    "key text, run_id uuid, state text, result jsonb",
    "ON CONFLICT (key) DO UPDATE SET state = excluded.state, result = excluded.result, "
    "updated_at = now()",
    fact=True,
)
_TASK_COLUMNS = (
    "id, kind, run_id, workflow_id, step_id, step_seq, submission_id, org_id, title, "
    "description, assignee, status, due_at, fields"
)
_TASKS = _Part(
    "opened",
    "tasks",
    "id uuid, kind text, run_id uuid, workflow_id uuid, step_id text, step_seq int, "
    "submission_id uuid, org_id text, title text, description text, assignee text, "
    "status text, due_in float8, fields jsonb",
    "ON CONFLICT DO NOTHING",
    columns=_TASK_COLUMNS,
    values=_TASK_COLUMNS.replace("due_at", _due("", "due_in")),
)
_TIMERS = _Part(
    "timed",
    "timers",
    "id uuid, run_id uuid, kind text, due_at timestamptz, delay float8, payload jsonb",
    "ON CONFLICT DO NOTHING",
    columns="id, run_id, kind, due_at, payload",
    values=f"id, run_id, kind, {_due('due_at', 'delay')}, payload",
)
_QUEUED = _Part("queued", "outbox", "event_id uuid, event_type text, payload jsonb")
_PARTS = (_STEPS, _ATTEMPTS, _DONE, _TASKS, _TIMERS, _QUEUED)
_FACTS = (_ATTEMPTS, _DONE, _TIMERS)
_TAKEN = (
    "taken AS (UPDATE outbox SET taken_at = now() "
    "WHERE event_id = ANY(${}::uuid[]) AND taken_at IS NULL)"
)
_MOVE_SPEC = (
    "id uuid, revision int, status text, current_step_id text, step_seq int, "
    "context jsonb, error text, deliveries int, finished bool"
)


@functools.cache
def _checkpoint_statement(present: tuple[bool, ...], taken: bool) -> str:
    """One statement that moves runs (each only if its revision still matches) and writes the
    parts of their journals that have rows. A handful of shapes occur (a step with actions, a
    waiting step ...); each is prepared once per connection."""
    ctes = [
        f"input AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS u({_MOVE_SPEC}))",
        "moved AS (UPDATE runs SET status = u.status, current_step_id = u.current_step_id, "
        "step_seq = u.step_seq, context = u.context, error = u.error, "
        "deliveries = u.deliveries, revision = runs.revision + 1, updated_at = now(), "
        "owner = $3, finished_at = CASE WHEN u.finished THEN now() END FROM input u "
        # `= ANY` keeps the plan an index lookup however large `runs` grows (a cached generic
        # plan would otherwise hash-join a full scan of it for every batch).
        "WHERE runs.id = ANY($2::uuid[]) AND runs.id = u.id AND runs.revision = u.revision "
        "RETURNING runs.id, runs.revision)",
    ]
    parameter = 4
    for part, has_rows in zip(_PARTS, present, strict=True):
        if has_rows:
            ctes.append(f"{part.name} AS ({part.statement(parameter)})")
            parameter += 1
    if taken:
        ctes.append(_TAKEN.format(parameter))
    return f"WITH {', '.join(ctes)} SELECT id, revision FROM moved"


@functools.cache
def _facts_statement(present: tuple[bool, ...]) -> str:
    ctes = [
        f"{part.name} AS ({part.statement(number, guarded=False)})"
        for number, part in enumerate((p for p, has in zip(_FACTS, present, strict=True) if has), 1)
    ]
    return f"WITH {', '.join(ctes)} SELECT 1"


def _step_rows(journal: Journal) -> list[dict[str, Any]]:
    """One row per step visit: a visit entered and left in one stretch appears once, with
    the time it was entered and the state it was left in."""
    merged: dict[int, dict[str, Any]] = {}
    for row in journal.steps:
        first = merged.get(row["seq"])
        merged[row["seq"]] = {**row, "entered_at": first["entered_at"]} if first else row
    return list(merged.values())


def _attempt_rows(journal: Journal, deliveries: int) -> list[dict[str, Any]]:
    return [{**row, "delivery": row.get("delivery") or deliveries} for row in journal.actions]


def _done_rows(journal: Journal) -> list[dict[str, Any]]:
    return list({row["key"]: row for row in journal.effects_done}.values())


def _journal_parts(run: RunRecord, journal: Journal) -> tuple[list[dict[str, Any]], ...]:
    queued = [
        {"event_id": e.event_id, "event_type": e.type, "payload": e.payload} for e in journal.events
    ]
    parts = (
        _step_rows(journal),
        _attempt_rows(journal, run.deliveries),
        _done_rows(journal),
        journal.tasks,
        journal.timers,
        queued,
    )
    return tuple([{**row, "owner": run.id} for row in rows] for rows in parts)


async def checkpoint_many(
    pg: Pool | Connection, items: list[tuple[RunRecord, Journal]], *, owner: str
) -> list[RunRecord | StaleRun]:
    """Write each run's new state with its journal, all in one statement, naming `owner` as
    the worker that drives them. A run someone else wrote since its `revision` was read gets
    `StaleRun`, and of its journal only the facts are written (the effects it performed and
    its attempts); the others come back with their new revision, journals cleared."""
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
    taken = [event_id for _, journal in items for event_id in journal.taken]
    extra: list[Any] = [json_text(p) for p in parts if p]
    if taken:
        extra.append(taken)
    rows = await pg.fetch(
        _checkpoint_statement(tuple(bool(p) for p in parts), bool(taken)),
        json_text(moves),
        [run.id for run, _ in items],
        owner,
        *extra,
    )
    revisions = {row["id"]: row["revision"] for row in rows}
    answer: list[RunRecord | StaleRun] = []
    for run, journal in items:
        journal.clear()
        if run.id in revisions:
            answer.append(replace(run, revision=revisions[run.id]))
        else:
            answer.append(StaleRun(f"run {run.id} was changed by another worker"))
    return answer


async def checkpoint(
    pg: Pool | Connection, run: RunRecord, journal: Journal, *, owner: str = ""
) -> RunRecord:
    """Write the run's new state and its journal in one statement; `StaleRun` if someone else
    wrote the run since `run.revision` was read (then only the journal's facts are written)."""
    [moved] = await checkpoint_many(pg, [(run, journal)], owner=owner)
    if isinstance(moved, StaleRun):
        raise moved
    return moved


async def record_facts(pg: Pool | Connection, run: RunRecord, journal: Journal) -> None:
    """Write what happened whoever drives the run (effects done, attempts, timers of its own
    such as a notification's retry) without moving the run; those rows leave the journal."""
    parts = [
        [{**row, "owner": run.id} for row in rows]
        for rows in (
            _attempt_rows(journal, run.deliveries),
            _done_rows(journal),
            journal.timers,
        )
    ]
    if any(parts):
        await pg.execute(
            _facts_statement(tuple(bool(p) for p in parts)), *(json_text(p) for p in parts if p)
        )
    for rows in (journal.actions, journal.effects_done, journal.timers):
        rows.clear()


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
    return bool(await _fail_where(conn, reason, runs.c.id == run_id))


async def fail_event_runs(conn: AsyncConnection, event_id: UUID, reason: str) -> int:
    """Fail the unfinished runs an event started (it was dead-lettered); how many."""
    return await _fail_where(conn, reason, runs.c.event_id == event_id)


async def _fail_where(conn: AsyncConnection, reason: str, which: Any) -> int:
    result = await conn.execute(
        update(runs)
        .where(which, runs.c.status.notin_(FINISHED_RUNS))
        .values(
            status=RunStatus.FAILED,
            error=reason,
            revision=runs.c.revision + 1,
            updated_at=func.now(),
            finished_at=func.now(),
        )
        .returning(runs.c.id)
    )
    return len(result.all())


_FAIL = f"""
    WITH failed AS (
        UPDATE runs SET status = 'failed', error = $2, revision = revision + 1,
            updated_at = now(), finished_at = now(), owner = $3
        WHERE id = $1 AND status NOT IN ('completed', 'failed')
        RETURNING id, step_seq
    ), step AS (
        UPDATE run_steps SET status = 'failed', error = $2, finished_at = now()
        FROM failed WHERE run_steps.run_id = failed.id AND run_steps.seq = failed.step_seq
          AND run_steps.status IN ('running', 'waiting')
    ), created AS (
        INSERT INTO runs ({", ".join(_INSERTED)}, owner, finished_at)
        SELECT {", ".join(_INSERTED)}, $3, now()
        FROM jsonb_to_recordset($4::jsonb) AS x({_RUN_SPEC})
        WHERE NOT EXISTS (SELECT 1 FROM runs WHERE id = $1)
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT (SELECT count(*) FROM failed) + (SELECT count(*) FROM created)
"""


async def fail(
    pg: Pool | Connection,
    run_id: UUID,
    reason: str,
    *,
    owner: str,
    fresh: RunRecord | None = None,
) -> bool:
    """Fail a run that is not finished, with the step it was in, whatever state its last
    checkpoint left (a run's own failure: an error in one of its actions or in the engine).
    A run that was never stored is stored failed from `fresh`. True when a run was failed."""
    created = (
        [
            {
                **{name: getattr(fresh, name) for name in _INSERTED},
                "status": RunStatus.FAILED,
                "error": reason,
            }
        ]
        if fresh is not None
        else []
    )
    return bool(await pg.fetchval(_FAIL, run_id, reason[:4000], owner, json_text(created)))


_ORPHANS = """
    SELECT id FROM runs
    WHERE status = 'running' AND updated_at < now() - make_interval(secs => $1)
      AND (owner IS NULL OR NOT EXISTS (
          SELECT 1 FROM workers w WHERE w.owner = runs.owner
            AND w.heartbeat_at > now() - make_interval(secs => $2)))
    ORDER BY updated_at LIMIT $3
"""
_TOUCH = "UPDATE runs SET updated_at = now() WHERE id = ANY($1::uuid[])"


async def orphans(
    conn: Connection, *, quiet_for: float, dead_after: float, limit: int
) -> list[UUID]:
    """Runs left `running` by a worker that died, quiet for `quiet_for` seconds: their events
    may be gone from Redis (a restart without persistence), so nothing would wake them. Each
    is touched, so that the next sweep leaves it alone for as long again."""
    ids = [row["id"] for row in await conn.fetch(_ORPHANS, quiet_for, dead_after, limit)]
    if ids:
        await conn.execute(_TOUCH, ids)
    return ids
