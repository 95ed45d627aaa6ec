"""Runs: a filtered, paged list, and each run's timeline (steps, every action attempt with its
error, timers, tasks and who completed them), with a retry button for a failed run and a
cancel button for a running or waiting one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from services.api.access import acting_for, needs
from services.api.console.identity import Looker
from services.api.console.web import ConsoleRoute, built, posted, render, see_other
from services.api.deps import Db, Filter
from services.api.routes import runs as run_routes
from services.api.routes import workflows as workflow_routes
from services.api.schemas.runs import RunCancel
from workflow_core.errors import Unprocessable
from workflow_core.persistence import records, runs
from workflow_core.statuses import RunStatus

router = APIRouter(prefix="/console/runs", route_class=ConsoleRoute, include_in_schema=False)
PAGE = Annotated[int, Query(ge=1, le=200)]
# A plain form sends its empty fields as empty strings: an empty filter is no filter.
FormText = Annotated[str | None, Query(max_length=100)]
# An <input type="datetime-local"> sends minutes (or seconds) without a zone: read as UTC.
When = Annotated[str | None, Query(max_length=40)]


def parse_when(text: str | None, name: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Unprocessable(
            name, f"{name} must be a date and time such as 2026-01-31T09:30"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _uuid(text: str | None, name: str) -> UUID | None:
    if not text:
        return None
    try:
        return UUID(text.strip())
    except ValueError:
        raise Unprocessable(name, f"{name} must be an id (a UUID)") from None


def _status(text: str | None) -> RunStatus | None:
    if not text:
        return None
    try:
        return RunStatus(text)
    except ValueError:
        shown = ", ".join(RunStatus)
        raise Unprocessable("status", f"status must be one of {shown}") from None


def cursor_of(run: runs.RunRecord) -> str:
    assert run.created_at is not None
    return f"{run.created_at.isoformat()}_{run.id}"


def parse_cursor(text: str | None) -> tuple[datetime, UUID] | None:
    if not text:
        return None
    try:
        at, _, run_id = text.rpartition("_")
        return datetime.fromisoformat(at), UUID(run_id)
    except ValueError:
        raise Unprocessable(
            "cursor", "not a cursor from this list: start from the first page"
        ) from None


@router.get("")
async def run_list(
    viewer: Looker,
    db: Db,
    workflow_id: FormText = None,
    status: FormText = None,
    org_id: Filter = None,
    since: When = None,
    until: When = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: PAGE = 25,
) -> Response:
    """Newest first; `cursor` (from the page before) pages on."""
    needs(viewer.principal, "admin")
    org = acting_for(viewer.principal, org_id or None)
    async with db.reading() as conn:
        found = await runs.list_runs(
            conn,
            org_id=org,
            workflow_id=_uuid(workflow_id, "workflow_id"),
            status=_status(status),
            created_from=parse_when(since, "since"),
            created_until=parse_when(until, "until"),
            after=parse_cursor(cursor),
            limit=limit + 1,  # one more tells whether there is a next page
        )
    shown = found[:limit]
    more = cursor_of(shown[-1]) if len(found) > limit else None
    known = await workflow_routes.list_workflows(
        db, viewer.principal, limit=200, offset=0, org_id=None, active=True
    )
    filters = {
        "workflow_id": workflow_id or "",
        "status": status or "",
        "org_id": org_id or "",
        "since": since or "",
        "until": until or "",
        "limit": limit,
    }
    next_query = {key: value for key, value in filters.items() if value} | {"cursor": more}
    return render(
        "runs.html",
        viewer,
        runs=shown,
        workflows={str(w["id"]): w["name"] for w in known},
        filters=filters,
        statuses=[s.value for s in RunStatus],
        next_query=next_query if more else None,
        first_page=cursor is None,
    )


@router.get("/{run_id}")
async def run_page(run_id: UUID, viewer: Looker, db: Db) -> Response:
    view = await run_routes.get_run(run_id, db, viewer.principal)  # checks scope and organisation
    async with db.reading() as conn:
        timers = await runs.timers_of(conn, run_id)
        tasks = await records.list_tasks(conn, run_id=run_id, limit=200)
    return render("run.html", viewer, run=view, timers=timers, tasks=tasks)


@router.post("/{run_id}/retry")
async def retry(request: Request, run_id: UUID, viewer: Looker, db: Db) -> Response:
    await posted(request, viewer)
    await run_routes.retry_run(run_id, db, viewer.principal)
    return see_other(f"/console/runs/{run_id}?retried=1")


@router.post("/{run_id}/cancel")
async def cancel(request: Request, run_id: UUID, viewer: Looker, db: Db) -> Response:
    """`POST /runs/{id}/cancel` from the run's page, with the reason typed there (if any)."""
    fields = await posted(request, viewer)
    body = built(RunCancel, reason=fields.get("reason", "").strip() or None)
    await run_routes.cancel_run(run_id, db, viewer.principal, body)
    return see_other(f"/console/runs/{run_id}?cancelled=1")
