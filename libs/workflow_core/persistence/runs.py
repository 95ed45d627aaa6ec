"""Runs: created when a worker takes their event (with the event marked taken), read with their
history, failed when something goes wrong outside the engine's decisions, and found again when
a dead worker left them running. Their progress is written by checkpoints (checkpoints.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, update

from workflow_core.errors import Conflict
from workflow_core.persistence import sql
from workflow_core.persistence.pool import Connection, Executor, json_text
from workflow_core.persistence.tables import run_actions, run_steps, runs, timers
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
    concurrency_key: str | None = None
    throttle_key: str | None = None
    queued_for: str | None = None
    """While the run waits its turn (status `waiting`): `concurrency` or `throttle`."""
    queued_at: datetime | None = None
    """Its place in its queues: when its form was submitted."""
    admitted_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_RUNS


_RUN_FIELDS = tuple(RunRecord.__dataclass_fields__)
_INSERTED = tuple(
    n
    for n in _RUN_FIELDS
    if n not in {"created_at", "updated_at", "finished_at", "revision", "admitted_at"}
)


_SELECTED = [runs.c[name] for name in _RUN_FIELDS]


def _record(row: Any) -> RunRecord:
    return RunRecord(**{name: row[name] for name in _RUN_FIELDS})


_RUN_SPEC = ", ".join(sql.typed_columns(runs, _INSERTED))
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
    pg: Executor, starts: list[EventStart], *, owner: str
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
        {row["id"]: _record(row) for row in await pg.fetch(_SELECT, missing)} if missing else {}
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


async def get(db: Executor, run_id: UUID, *, for_update: bool = False) -> RunRecord | None:
    query = select(*_SELECTED).where(runs.c.id == run_id)
    if for_update:
        query = query.with_for_update()
    row = await sql.fetchrow(db, query)
    return _record(row) if row else None


async def history(db: Executor, run_id: UUID) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    steps = await sql.fetch(
        db, select(run_steps).where(run_steps.c.run_id == run_id).order_by(run_steps.c.seq)
    )
    attempts = await sql.fetch(
        db,
        select(run_actions)
        .where(run_actions.c.run_id == run_id)
        .order_by(
            run_actions.c.step_seq,
            run_actions.c.action_index,
            run_actions.c.attempt,
            run_actions.c.id,
        ),
    )
    return [dict(row) for row in steps], [dict(row) for row in attempts]


async def for_submission(db: Executor, submission_id: UUID) -> list[RunRecord]:
    query = (
        select(*_SELECTED).where(runs.c.submission_id == submission_id).order_by(runs.c.created_at)
    )
    return [_record(row) for row in await sql.fetch(db, query)]


async def list_runs(
    db: Executor,
    *,
    org_id: str | None = None,
    workflow_id: UUID | None = None,
    status: str | None = None,
    submission_id: UUID | None = None,
    created_from: datetime | None = None,
    created_until: datetime | None = None,
    after: tuple[datetime, UUID] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[RunRecord]:
    """Newest first. `after`: the (created_at, id) of the last run of the previous page, a
    cursor that neither repeats nor skips a run while new ones arrive."""
    query = select(*_SELECTED)
    if created_from is not None:
        query = query.where(runs.c.created_at >= created_from)
    if created_until is not None:
        query = query.where(runs.c.created_at < created_until)
    if after is not None:
        at, run_id = after
        query = query.where(
            (runs.c.created_at < at) | ((runs.c.created_at == at) & (runs.c.id > run_id))
        )
    if org_id is not None:
        query = query.where(runs.c.org_id == org_id)
    if workflow_id is not None:
        query = query.where(runs.c.workflow_id == workflow_id)
    if status is not None:
        query = query.where(runs.c.status == status)
    if submission_id is not None:
        query = query.where(runs.c.submission_id == submission_id)
    query = query.order_by(runs.c.created_at.desc(), runs.c.id).limit(limit).offset(offset)
    return [_record(row) for row in await sql.fetch(db, query)]


async def timers_of(db: Executor, run_id: UUID) -> list[dict[str, Any]]:
    """The run's durable wake-ups (waits, task deadlines, next attempts), by due time."""
    query = select(timers).where(timers.c.run_id == run_id).order_by(timers.c.due_at, timers.c.id)
    return [dict(row) for row in await sql.fetch(db, query)]


async def mark_failed(db: Executor, run_id: UUID, reason: str) -> bool:
    """Fail a run that is not finished (used when its event is dead-lettered)."""
    return bool(await _fail_where(db, reason, runs.c.id == run_id))


async def fail_event_runs(db: Executor, event_id: UUID, reason: str) -> int:
    """Fail the unfinished runs an event started (it was dead-lettered); how many."""
    return await _fail_where(db, reason, runs.c.event_id == event_id)


async def _fail_where(db: Executor, reason: str, which: Any) -> int:
    return await sql.execute(
        db,
        update(runs)
        .where(which, runs.c.status.notin_(FINISHED_RUNS))
        .values(
            status=RunStatus.FAILED,
            error=reason,
            queued_for=None,  # a failed run is in no queue (a retry starts it at once)
            revision=runs.c.revision + 1,
            updated_at=func.now(),
            finished_at=func.now(),
        ),
    )


_FAIL = f"""
    WITH failed AS (
        UPDATE runs SET status = 'failed', error = $2, revision = revision + 1,
            updated_at = now(), finished_at = now(), owner = $3, queued_for = NULL
        WHERE id = $1 AND status IN ('running', 'waiting')
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
    pg: Executor,
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
                "queued_for": None,
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


async def count_by_status(db: Executor) -> dict[str, int]:
    """How many runs there are of each status (0 for a status none has)."""
    rows = await db.fetch("SELECT status, count(*) AS n FROM runs GROUP BY status")
    counts = {status.value: 0 for status in RunStatus}
    counts.update({row["status"]: int(row["n"]) for row in rows})
    return counts
