"""What the worker needs of human tasks: read the one a run waits for, and close it when its
deadline passes (unless a person completed it first)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import func, select, update

from workflow_core.persistence import sql
from workflow_core.persistence.pool import Executor
from workflow_core.persistence.tables import tasks
from workflow_core.statuses import TaskStatus

TIMEOUT_OUTCOME = "timeout"


async def get(db: Executor, task_id: UUID) -> dict[str, Any] | None:
    return sql.mapping(await sql.fetchrow(db, select(tasks).where(tasks.c.id == task_id)))


async def time_out(db: Executor, task_id: UUID) -> dict[str, Any] | None:
    """Close a pending task with outcome `timeout`; None when it is no longer pending."""
    return sql.mapping(
        await sql.fetchrow(
            db,
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.PENDING)
            .values(
                status=TaskStatus.TIMED_OUT,
                outcome=TIMEOUT_OUTCOME,
                completed_at=func.now(),
                completed_by="flowline (deadline)",
                updated_at=func.now(),
            )
            .returning(*tasks.c),
        )
    )


def as_context(task: dict[str, Any]) -> dict[str, Any]:
    """The task as the run's context shows it under `task`."""
    return {
        "id": str(task["id"]),
        "status": task["status"],
        "outcome": task["outcome"],
        "data": task["data"] or {},
        "completed_by": task["completed_by"],
        "completed_at": task["completed_at"].isoformat() if task["completed_at"] else None,
    }
