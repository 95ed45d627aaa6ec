"""An operator's control of runs: cancel one (POST /runs/{id}/cancel), pick the failed runs a
filter matches (POST /runs/retry; revival.py restarts them), and purge finished runs older
than RUN_RETENTION_DAYS with what only they use (the worker's housekeeping).

A cancel and whatever else may move the run at the same moment (a person completing its task,
a timer firing, a worker between two actions) are decided by the run's row: the cancel locks
it and changes it only while it is unfinished, a completion locks it first too, and a worker's
checkpoint writes only the revision it read. Exactly one of them wins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, func, select

from workflow_core.errors import Conflict
from workflow_core.persistence import gates, sql
from workflow_core.persistence import runs as run_records
from workflow_core.persistence.pool import Connection, Executor
from workflow_core.persistence.tables import runs, tasks
from workflow_core.statuses import FINISHED_RUNS, SETTLED_TASKS, RunStatus, TaskKind

CANCELLED_BY = "flowline (run cancelled)"

_CANCEL = """
    WITH cancelled AS (
        UPDATE runs SET status = 'cancelled', error = $2, revision = revision + 1,
            updated_at = now(), finished_at = now()
        WHERE id = $1 AND status IN ('running', 'waiting')
        RETURNING id, step_seq
    ), step AS (
        UPDATE run_steps SET status = 'cancelled', error = $2, finished_at = now()
        FROM cancelled WHERE run_steps.run_id = cancelled.id AND run_steps.seq = cancelled.step_seq
          AND run_steps.status IN ('running', 'waiting')
    ), closed AS (
        UPDATE tasks SET status = 'cancelled', completed_by = $3, updated_at = now()
        WHERE run_id IN (SELECT id FROM cancelled) AND kind = 'human' AND status = 'pending'
        RETURNING id
    ), unset AS (
        DELETE FROM timers WHERE run_id IN (SELECT id FROM cancelled) RETURNING id
    )
    SELECT (SELECT count(*) FROM cancelled) AS runs, (SELECT count(*) FROM closed) AS tasks,
        (SELECT count(*) FROM unset) AS timers
"""


@dataclass(frozen=True, slots=True)
class Cancelled:
    run_id: UUID
    reason: str
    tasks_cancelled: int
    timers_deleted: int


def cancel_reason(reason: str | None) -> str:
    """What the run's `error` says after a cancel."""
    return f"cancelled: {reason}" if reason else "cancelled"


async def cancel(conn: Connection, run: run_records.RunRecord, reason: str | None) -> Cancelled:
    """Cancel `run`, locked by the caller's transaction (runs.get(for_update=True)): its
    pending human tasks are cancelled and its timers deleted. `Conflict` when it is finished,
    or when the task it waits for was settled already (that completion won: the run goes on)."""
    if run.status in FINISHED_RUNS:
        raise Conflict(
            f"run {run.id} is already {run.status}; only a running or waiting run can be cancelled"
        )
    if run.status == RunStatus.WAITING:
        await _refuse_if_resuming(conn, run)
    written = cancel_reason(reason)
    row = await conn.fetchrow(_CANCEL, run.id, written, CANCELLED_BY)
    assert row is not None and row["runs"] == 1, "the run is locked and unfinished"
    if run.queued_for is None and (run.concurrency_key or run.throttle_key):
        await _wake_its_queue(conn, run)
    return Cancelled(run.id, written, int(row["tasks"]), int(row["timers"]))


async def _wake_its_queue(conn: Connection, run: run_records.RunRecord) -> None:
    """The cancelled run held a slot of its concurrency key (or counted for its throttle): the
    first run queued behind it gets an `admit` wake-up in the same transaction, so the queue
    moves at once rather than at the reconcile sweep's next look."""
    head = await gates.queue_head(conn, run.workflow_id, run.concurrency_key, run.throttle_key)
    if head is not None:
        await gates.wake(conn, [head])


async def _refuse_if_resuming(conn: Connection, run: run_records.RunRecord) -> None:
    settled = await sql.fetchrow(
        conn,
        select(tasks.c.id, tasks.c.status, tasks.c.updated_at).where(
            tasks.c.run_id == run.id,
            tasks.c.step_seq == run.step_seq,
            tasks.c.kind == TaskKind.HUMAN,
            tasks.c.status.in_(SETTLED_TASKS),
        ),
    )
    if settled is not None:
        status = str(settled["status"]).replace("_", " ")
        raise Conflict(
            f"run {run.id} is resuming: its task {settled['id']} was {status} at "
            f"{settled['updated_at'].isoformat()}; it can be cancelled once it has moved on"
        )


async def status_of(db: Executor, run_id: UUID) -> str | None:
    """The run's stored status (None when there is no such run): one indexed lookup."""
    value = await db.fetchval("SELECT status FROM runs WHERE id = $1", run_id)
    return None if value is None else str(value)


# -- failed runs a filter matches ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailedRunFilter:
    org_id: str | None = None
    workflow_id: UUID | None = None
    since: datetime | None = None
    """Failed at or after (the run's `finished_at`)."""
    until: datetime | None = None
    """Failed before."""
    error_contains: str | None = None


def _matching(which: FailedRunFilter) -> Any:
    conditions = [runs.c.status == RunStatus.FAILED]
    if which.org_id is not None:
        conditions.append(runs.c.org_id == which.org_id)
    if which.workflow_id is not None:
        conditions.append(runs.c.workflow_id == which.workflow_id)
    if which.since is not None:
        conditions.append(runs.c.finished_at >= which.since)
    if which.until is not None:
        conditions.append(runs.c.finished_at < which.until)
    if which.error_contains:
        conditions.append(func.strpos(runs.c.error, which.error_contains) > 0)
    return and_(*conditions)


async def count_failed(db: Executor, which: FailedRunFilter) -> int:
    return int(await sql.fetchval(db, select(func.count()).where(_matching(which))) or 0)


async def failed_runs(conn: Connection, which: FailedRunFilter, limit: int) -> list[UUID]:
    """Up to `limit` matching failed runs, oldest failure first, locked (runs another caller
    is retrying at the same moment are skipped)."""
    query = (
        select(runs.c.id)
        .where(_matching(which))
        .order_by(runs.c.finished_at, runs.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [row["id"] for row in await sql.fetch(conn, query)]


# -- retention -------------------------------------------------------------------------------

_PURGE_RUNS = """
    WITH doomed AS (
        SELECT id FROM runs
        WHERE finished_at < now() - make_interval(days => $1)
          AND status IN ('completed', 'failed', 'cancelled')
        ORDER BY finished_at LIMIT $2
        FOR UPDATE SKIP LOCKED
    ), todos_kept AS (
        UPDATE tasks SET run_id = NULL
        WHERE run_id IN (SELECT id FROM doomed) AND kind = 'todo'
    ), tasks_gone AS (
        DELETE FROM tasks WHERE run_id IN (SELECT id FROM doomed) AND kind <> 'todo'
    ), effects_gone AS (
        DELETE FROM effects WHERE run_id IN (SELECT id FROM doomed)
    ), runs_gone AS (
        DELETE FROM runs WHERE id IN (SELECT id FROM doomed) RETURNING submission_id
    )
    SELECT (SELECT count(*) FROM runs_gone) AS runs,
        ARRAY(SELECT DISTINCT submission_id FROM runs_gone WHERE submission_id IS NOT NULL)
            AS submissions
"""
_PURGE_SUBMISSIONS = """
    DELETE FROM submissions s WHERE s.id = ANY($1::uuid[])
      AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.submission_id = s.id)
"""


@dataclass(frozen=True, slots=True)
class Purged:
    runs: int = 0
    submissions: int = 0


async def purge_finished(conn: Connection, *, older_than_days: int, limit: int) -> Purged:
    """Delete up to `limit` runs that finished (completed, failed, cancelled) more than
    `older_than_days` ago, with their steps, attempts, effects, timers and human tasks (a
    to-do item an action made stays, without its run; tickets stay), then the submissions
    that no run refers to any more. In the caller's transaction; runs another purge holds are
    skipped."""
    row = await conn.fetchrow(_PURGE_RUNS, older_than_days, limit)
    assert row is not None
    submissions = list(row["submissions"])
    deleted = "DELETE 0"
    if submissions:
        deleted = await conn.execute(_PURGE_SUBMISSIONS, submissions)
    return Purged(int(row["runs"]), int(deleted.rsplit(" ", 1)[-1]))
