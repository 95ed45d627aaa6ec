"""Runs: status, current step, and the history of every step and action attempt."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from services.api.access import Caller, must_see, needs
from services.api.deps import Db, Limit, Offset
from services.api.keys import Principal
from services.api.presenters import run_summary, run_view
from services.api.schemas import RunOut, RunSummary
from workflow_core.errors import Conflict, NotFound
from workflow_core.persistence import revival, runs
from workflow_core.persistence.pool import Connection
from workflow_core.statuses import RunStatus

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("/{run_id}", response_model=RunOut, responses={404: {"description": "no such run"}})
async def get_run(run_id: UUID, db: Db, principal: Caller) -> dict[str, Any]:
    needs(principal, "admin")
    async with db.reading() as conn:
        run = await _visible(conn, principal, run_id)
        steps, attempts = await runs.history(conn, run_id)
    return run_view(run, steps, attempts)


@router.post(
    "/{run_id}/retry",
    status_code=202,
    responses={404: {"description": "no such run"}, 409: {"description": "the run has not failed"}},
)
async def retry_run(run_id: UUID, db: Db, principal: Caller) -> dict[str, Any]:
    """Restart a failed run at the step where it failed; what that step already did is not
    repeated. A worker does the work (the answer comes before it)."""
    needs(principal, "admin")
    async with db.transaction() as conn:
        run = await _visible(conn, principal, run_id)
        restarted = await revival.retry_run(conn, run_id)
        if restarted is None:
            raise Conflict(f"run {run_id} is {run.status}; only failed runs can be retried")
    return restarted


async def _visible(conn: Connection, principal: Principal, run_id: UUID) -> runs.RunRecord:
    missing = f"no run with id {run_id}"
    run = await runs.get(conn, run_id)
    if run is None:
        raise NotFound(missing)
    must_see(principal, run.org_id, missing)
    return run


@router.get("", response_model=list[RunSummary])
async def list_runs(
    db: Db,
    principal: Caller,
    workflow_id: UUID | None = None,
    status: RunStatus | None = None,
    submission_id: UUID | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Runs, newest first, filtered by workflow, status or submission (an organisation's key
    sees its organisation's runs only)."""
    needs(principal, "admin")
    async with db.reading() as conn:
        found = await runs.list_runs(
            conn,
            org_id=principal.org_id,
            workflow_id=workflow_id,
            status=status,
            submission_id=submission_id,
            limit=limit,
            offset=offset,
        )
    return [run_summary(run) for run in found]
