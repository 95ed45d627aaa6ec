"""Tasks: human tasks (a run waits for each) and to-do items, listed, read and completed."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body

from services.api.access import Caller, acting_for, must_see, needs
from services.api.deps import Db, Filter, Limit, Offset
from services.api.keys import Principal
from services.api.schemas.tasks import TaskCompletion, TaskOut
from workflow_core.errors import NotFound
from workflow_core.persistence import records
from workflow_core.persistence.pool import Connection
from workflow_core.statuses import TaskKind, TaskStatus

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get("", response_model=list[TaskOut])
async def list_tasks(
    db: Db,
    principal: Caller,
    status: TaskStatus | None = None,
    assignee: Filter = None,
    org_id: Filter = None,
    kind: TaskKind | None = None,
    run_id: UUID | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Tasks, newest first: `?status=pending&kind=human` is the work people are waited for."""
    needs(principal, "tasks")
    org_id = acting_for(principal, org_id)
    async with db.reading() as conn:
        return await records.list_tasks(
            conn,
            status=status,
            assignee=assignee,
            org_id=org_id,
            kind=kind,
            run_id=run_id,
            limit=limit,
            offset=offset,
        )


@router.get("/{task_id}", response_model=TaskOut, responses={404: {"description": "no such task"}})
async def get_task(task_id: UUID, db: Db, principal: Caller) -> dict[str, Any]:
    needs(principal, "tasks")
    async with db.reading() as conn:
        return await _visible(conn, principal, task_id)


async def _visible(conn: Connection, principal: Principal, task_id: UUID) -> dict[str, Any]:
    missing = f"no task with id {task_id}"
    task = await records.get_task(conn, task_id)
    if task is None:
        raise NotFound(missing)
    must_see(principal, task["org_id"], missing)
    return task


@router.post(
    "/{task_id}/complete",
    response_model=TaskOut,
    responses={
        404: {"description": "no such task"},
        409: {"description": "the task is settled already, or its run has finished"},
    },
)
async def complete_task(
    task_id: UUID,
    db: Db,
    principal: Caller,
    body: Annotated[TaskCompletion | None, Body()] = None,
) -> dict[str, Any]:
    """Complete a pending task with an outcome and data. A human task's run resumes: the
    worker reads `task.outcome` and `task.data` into its context and takes its transitions."""
    needs(principal, "tasks")
    completion = body or TaskCompletion()
    async with db.transaction() as conn:
        await _visible(conn, principal, task_id)
        return await records.complete_task(
            conn,
            task_id,
            outcome=completion.outcome,
            data=completion.data,
            completed_by=completion.completed_by,
        )
