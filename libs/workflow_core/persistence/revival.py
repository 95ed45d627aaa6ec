"""Giving failed runs another go: a replayed dead letter revives the runs its event drove, and
POST /runs/{id}/retry restarts a failed run at the step where it failed. Both queue the event
that wakes the run in the same transaction."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import func, update

from workflow_core import events
from workflow_core.ids import new_id
from workflow_core.persistence import outbox, sql
from workflow_core.persistence.pool import Connection
from workflow_core.persistence.tables import runs
from workflow_core.statuses import RunStatus


def _revive(*conditions: Any, status: str) -> Any:
    return (
        update(runs)
        .where(*conditions, runs.c.status == RunStatus.FAILED)
        .values(
            status=status,
            error=None,
            finished_at=None,
            updated_at=func.now(),
            revision=runs.c.revision + 1,
        )
    )


async def replay_event(conn: Connection, event: events.Event) -> int:
    """Queue `event` again and revive the failed runs it drove; returns how many."""
    if event.type == events.RUN_RESUME:
        statement = _revive(
            runs.c.id == UUID(event.payload["run_id"]),
            runs.c.step_seq == event.payload.get("step_seq"),
            status=RunStatus.WAITING,
        )
    else:
        # RUNNING: the worker carries on where each run stopped when it sees the event again.
        statement = _revive(runs.c.event_id == event.event_id, status=RunStatus.RUNNING)
    revived = await sql.execute(conn, statement)
    await outbox.add(conn, event)
    return revived


async def retry_run(conn: Connection, run_id: UUID) -> dict[str, Any] | None:
    """Restart a failed run at its current step (actions already done are not repeated);
    None when the run is not failed."""
    restarted = await retry_runs(conn, [run_id])
    return restarted[0] if restarted else None


async def retry_runs(conn: Connection, run_ids: list[UUID]) -> list[dict[str, Any]]:
    """Restart those of `run_ids` that are failed, each at its current step, in one statement
    (and one for their events); what was restarted."""
    rows = await sql.fetch(
        conn,
        _revive(runs.c.id.in_(run_ids), status=RunStatus.WAITING).returning(
            runs.c.id, runs.c.step_seq, runs.c.current_step_id
        ),
    )
    await outbox.add_events(
        conn,
        [
            events.run_resume(
                new_id(), row["id"], "retry", step_seq=row["step_seq"], action_index=0, attempt=1
            )
            for row in rows
        ],
    )
    return [
        {
            "run_id": row["id"],
            "status": RunStatus.WAITING,
            "step_id": row["current_step_id"],
            "step_seq": row["step_seq"],
        }
        for row in rows
    ]
