"""The task inbox: pending tasks, mine (assigned to the name given at sign-in, or the key's
name), overdue ones; completing a task with an outcome and a comment."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

from fastapi import APIRouter, Request, Response

from services.api.access import acting_for, needs
from services.api.console.identity import Looker
from services.api.console.web import ConsoleRoute, built, posted, render, see_other
from services.api.deps import Db
from services.api.routes import tasks as task_routes
from services.api.schemas.tasks import TaskCompletion
from workflow_core.persistence import records
from workflow_core.statuses import TaskStatus

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
InboxView = Literal["pending", "mine", "overdue"]
OUTCOMES = ("approved", "rejected", "done")


@router.get("/inbox")
async def inbox(viewer: Looker, db: Db, view: InboxView = "pending", done: str = "") -> Response:
    needs(viewer.principal, "tasks")
    org_id = acting_for(viewer.principal, None)
    async with db.reading() as conn:
        tasks = await records.list_tasks(
            conn,
            status=TaskStatus.PENDING,
            org_id=org_id,
            assignee=viewer.who if view == "mine" else None,
            due_before=datetime.now(UTC) if view == "overdue" else None,
            limit=200,
        )
    return render(
        "inbox.html",
        viewer,
        tasks=tasks,
        view=view,
        outcomes=OUTCOMES,
        now=datetime.now(UTC),
        done=done,
    )


@router.post("/tasks/{task_id}/complete")
async def complete(request: Request, task_id: UUID, viewer: Looker, db: Db) -> Response:
    """The JSON route's completion: the run resumes with `task.outcome` and `task.data`
    (`{"comment": ...}` when one is given); `completed_by` is who signed in."""
    fields = await posted(request, viewer)
    comment = fields.get("comment", "").strip()
    completion = built(
        TaskCompletion,
        outcome=fields.get("outcome", "").strip() or None,
        data={"comment": comment} if comment else None,
        completed_by=viewer.who[:500] or None,
    )
    await task_routes.complete_task(task_id, db, viewer.principal, completion)
    view = fields.get("view", "pending")
    back = view if view in ("pending", "mine", "overdue") else "pending"
    return see_other(f"/console/inbox?view={back}&done={task_id}")
