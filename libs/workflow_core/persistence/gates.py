"""Concurrency keys and throttles, the stored part: letting queued runs in.

The slots are never counted in memory: each admission counts them from the runs' rows, under a
transaction-level advisory lock on the workflow and organisation, so two workers (or a crash
half-way) can never let more runs in than the limit. A run let in is `running`; the worker that
admitted it drives it (`me`), or a `run.resume` event with cause `admitted` is queued in the
same transaction for whichever worker takes it (a lost one is found by the orphan sweep: the
run is `running` with no owner). A queue whose wake-up was lost (a crash between a run's end
and the admission it calls for) is found by `stuck_queues`, from the reconcile sweep."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from uuid import UUID

from workflow_core import events
from workflow_core.engine.gates import Admission, Gate, GateKeys, Queued, plan_admission
from workflow_core.ids import new_id
from workflow_core.persistence import outbox
from workflow_core.persistence.pool import Connection

LOCK_CLASS = 0x466C6F77  # "Flow": the first half of every gate's advisory lock
ADMIT_BATCH = 200
"""Queued runs looked at per admission (the oldest of the keys concerned)."""

_LOCK = "SELECT now() FROM (SELECT pg_advisory_xact_lock($1, hashtext($2))) AS locked"
_QUEUED = """
    SELECT id, concurrency_key, throttle_key FROM runs
    WHERE workflow_id = $1 AND queued_for IS NOT NULL AND status = 'waiting'
      AND (concurrency_key = $2 OR throttle_key = $3)
    ORDER BY queued_at, id LIMIT $4
"""
_ACTIVE = """
    SELECT concurrency_key AS key, count(*) AS n FROM runs
    WHERE workflow_id = $1 AND concurrency_key = ANY($2::text[])
      AND queued_for IS NULL AND status IN ('running', 'waiting')
    GROUP BY concurrency_key
"""
_STARTS = """
    SELECT throttle_key AS key, admitted_at FROM runs
    WHERE workflow_id = $1 AND throttle_key = ANY($2::text[]) AND admitted_at IS NOT NULL
      AND admitted_at > now() - make_interval(secs => $3)
"""
_ADMIT = """
    UPDATE runs SET status = 'running', queued_for = NULL, admitted_at = now(),
        updated_at = now(), revision = revision + 1,
        owner = CASE WHEN id = $2 THEN $3 END
    WHERE id = ANY($1::uuid[]) AND queued_for IS NOT NULL AND status = 'waiting'
    RETURNING id, revision
"""
_HOLD = """
    UPDATE runs SET queued_for = x.reason
    FROM unnest($1::uuid[], $2::text[]) AS x(id, reason)
    WHERE runs.id = x.id AND runs.queued_for IS DISTINCT FROM x.reason
"""
# One pending wake-up per throttled run is enough: a later admission finds it there.
_WAKE = """
    INSERT INTO timers (id, run_id, kind, due_at, payload)
    SELECT x.id, x.run_id, 'admit', x.due_at, '{}'::jsonb
    FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS x(id, run_id, due_at)
    WHERE NOT EXISTS (
        SELECT 1 FROM timers t
        WHERE t.run_id = x.run_id AND t.kind = 'admit' AND t.fired_at IS NULL)
"""


async def admit(
    conn: Connection,
    workflow_id: UUID,
    org_id: str | None,
    keys: GateKeys,
    gate: Gate,
    *,
    me: UUID | None,
    owner: str,
) -> dict[UUID, int]:
    """Let in the queued runs of `keys` (of this workflow and organisation) that fit, oldest
    first, in the caller's transaction; returns the admitted runs' new revisions. `me` is
    admitted to `owner` (the caller drives it); every other run gets a wake-up event."""
    now = await conn.fetchval(_LOCK, LOCK_CLASS, f"{workflow_id}/{org_id or ''}")
    rows = await conn.fetch(_QUEUED, workflow_id, keys.concurrency, keys.throttle, ADMIT_BATCH)
    if not rows:
        return {}
    queued = [Queued(row["id"], row["concurrency_key"], row["throttle_key"]) for row in rows]
    plan = plan_admission(
        queued,
        gate,
        active=await _active(conn, workflow_id, queued),
        starts=await _starts(conn, workflow_id, queued, gate),
        now=now,
    )
    return await _carry_out(conn, plan, me=me, owner=owner)


async def _active(conn: Connection, workflow_id: UUID, queued: list[Queued]) -> dict[str, int]:
    keys = sorted({run.concurrency_key for run in queued if run.concurrency_key is not None})
    if not keys:
        return {}
    return {row["key"]: int(row["n"]) for row in await conn.fetch(_ACTIVE, workflow_id, keys)}


async def _starts(
    conn: Connection, workflow_id: UUID, queued: list[Queued], gate: Gate
) -> dict[str, list[datetime]]:
    keys = sorted({run.throttle_key for run in queued if run.throttle_key is not None})
    starts: dict[str, list[datetime]] = defaultdict(list)
    if keys:
        seconds = gate.per.total_seconds()
        for row in await conn.fetch(_STARTS, workflow_id, keys, seconds):
            starts[row["key"]].append(row["admitted_at"])
    return starts


async def _carry_out(
    conn: Connection, plan: Admission, *, me: UUID | None, owner: str
) -> dict[UUID, int]:
    admitted: dict[UUID, int] = {}
    if plan.admitted:
        rows = await conn.fetch(_ADMIT, plan.admitted, me, owner)
        admitted = {row["id"]: row["revision"] for row in rows}
        others = [run_id for run_id in plan.admitted if run_id in admitted and run_id != me]
        if others:
            await outbox.add_events(
                conn, [events.run_resume(new_id(), run_id, "admitted") for run_id in others]
            )
    if plan.held:
        await conn.execute(_HOLD, list(plan.held), list(plan.held.values()))
    if plan.wake_at:
        runs = list(plan.wake_at)
        await conn.execute(_WAKE, [new_id() for _ in runs], runs, list(plan.wake_at.values()))
    return admitted


_STUCK = """
    WITH heads AS (
        SELECT DISTINCT ON (workflow_id, concurrency_key, throttle_key) id FROM runs
        WHERE queued_for IS NOT NULL AND status = 'waiting'
        ORDER BY workflow_id, concurrency_key, throttle_key, queued_at, id
    ), quiet AS (
        -- SKIP LOCKED: a run an admission holds is being looked at already, and waiting for
        -- it while holding other heads could deadlock with that admission
        SELECT runs.id FROM runs JOIN heads USING (id)
        WHERE runs.updated_at < now() - make_interval(secs => $1)
        ORDER BY runs.updated_at LIMIT $2
        FOR UPDATE OF runs SKIP LOCKED
    )
    UPDATE runs SET updated_at = now() FROM quiet WHERE runs.id = quiet.id RETURNING runs.id
"""


async def queue_head(
    conn: Connection, workflow_id: UUID, concurrency_key: str | None, throttle_key: str | None
) -> UUID | None:
    """The run first in line in the queue of these keys (of this workflow), if any."""
    rows = await conn.fetch(_QUEUED, workflow_id, concurrency_key, throttle_key, 1)
    return rows[0]["id"] if rows else None


async def wake(conn: Connection, run_ids: list[UUID]) -> None:
    """Queue an `admit` wake-up for each of these queued runs, in the caller's transaction:
    the worker that takes it lets in what fits of the run's queue."""
    await outbox.add_events(
        conn, [events.run_resume(new_id(), run_id, "admit") for run_id in run_ids]
    )


async def stuck_queues(conn: Connection, *, quiet_for: float, limit: int) -> list[UUID]:
    """The first queued run of each queue untouched for `quiet_for` seconds: its queue may
    have lost its wake-up (the run that ended before it crashed before admitting the next).
    Each is touched, so that the next sweep leaves it alone for as long again."""
    return [row["id"] for row in await conn.fetch(_STUCK, quiet_for, limit)]
