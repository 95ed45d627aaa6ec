"""Runs: status, current step, and the history of every step and action attempt."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from services.api.deps import Db, Limit, Offset
from services.api.presenters import run_summary, run_view
from services.api.schemas import RunOut, RunSummary
from workflow_core.errors import Conflict, NotFound
from workflow_core.persistence import revival, runs
from workflow_core.statuses import RunStatus

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("/{run_id}", response_model=RunOut, responses={404: {"description": "no such run"}})
async def get_run(run_id: UUID, db: Db) -> dict[str, Any]:
    async with db.reading() as conn:
        run = await runs.get(conn, run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id}")
        steps, attempts = await runs.history(conn, run_id)
    return run_view(run, steps, attempts)


@router.post(
    "/{run_id}/retry",
    status_code=202,
    responses={404: {"description": "no such run"}, 409: {"description": "the run has not failed"}},
)
async def retry_run(run_id: UUID, db: Db) -> dict[str, Any]:
    """Restart a failed run at the step where it failed; what that step already did is not
    repeated. A worker does the work (the answer comes before it)."""
    async with db.transaction() as conn:
        restarted = await revival.retry_run(conn, run_id)
        if restarted is None:
            run = await runs.get(conn, run_id)
            if run is None:
                raise NotFound(f"no run with id {run_id}")
            raise Conflict(f"run {run_id} is {run.status}; only failed runs can be retried")
    return restarted


@router.get("", response_model=list[RunSummary])
async def list_runs(
    db: Db,
    workflow_id: UUID | None = None,
    status: RunStatus | None = None,
    submission_id: UUID | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Runs, newest first, filtered by workflow, status or submission."""
    async with db.reading() as conn:
        found = await runs.list_runs(
            conn,
            workflow_id=workflow_id,
            status=status,
            submission_id=submission_id,
            limit=limit,
            offset=offset,
        )
    return [run_summary(run) for run in found]
