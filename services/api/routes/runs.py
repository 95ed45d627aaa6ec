"""Runs: status, current step, and the history of every step and action attempt."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body

from services.api.access import Caller, acting_for, must_see, needs
from services.api.deps import Db, Limit, Offset
from services.api.keys import Principal
from services.api.presenters import run_summary, run_view
from services.api.schemas.runs import (
    RunCancel,
    RunCancelled,
    RunOut,
    RunRetryFilter,
    RunRetryReport,
    RunSummary,
)
from workflow_core.errors import Conflict, NotFound
from workflow_core.log import get_logger
from workflow_core.persistence import control, revival, runs
from workflow_core.persistence.pool import Connection
from workflow_core.statuses import RunStatus

router = APIRouter(prefix="/runs", tags=["runs"])
log = get_logger(__name__)


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


@router.post(
    "/retry",
    response_model=RunRetryReport,
    responses={403: {"description": "another organisation's runs"}},
)
async def retry_runs(
    db: Db, principal: Caller, body: Annotated[RunRetryFilter, Body()]
) -> dict[str, Any]:
    """Restart the failed runs a filter matches, oldest failure first, at most `limit` of them
    (each as `POST /runs/{id}/retry` would); `truncated` says more matched."""
    needs(principal, "admin")
    which = control.FailedRunFilter(
        org_id=acting_for(principal, body.org_id),
        workflow_id=body.workflow_id,
        since=body.since,
        until=body.until,
        error_contains=body.error_contains,
    )
    async with db.transaction() as conn:
        matched = await control.count_failed(conn, which)
        chosen = await control.failed_runs(conn, which, body.limit) if matched else []
        restarted = await revival.retry_runs(conn, chosen) if chosen else []
    run_ids = [row["run_id"] for row in restarted]
    log.info("runs_retried", matched=matched, retried=len(run_ids), org_id=which.org_id)
    return {
        "matched": matched,
        "retried": len(run_ids),
        "run_ids": run_ids,
        "truncated": matched > len(run_ids),
    }


@router.post(
    "/{run_id}/cancel",
    response_model=RunCancelled,
    responses={
        404: {"description": "no such run"},
        409: {"description": "the run has finished, or the task it waited for was settled"},
    },
)
async def cancel_run(
    run_id: UUID,
    db: Db,
    principal: Caller,
    body: Annotated[RunCancel | None, Body()] = None,
) -> dict[str, Any]:
    """Stop a running or waiting run for good: its pending human tasks become `cancelled`, its
    timers are deleted, and a worker drives it no further (an action already under way ends
    first). The reason is kept as the run's `error`."""
    needs(principal, "admin")
    async with db.transaction() as conn:
        run = await _visible(conn, principal, run_id, lock=True)
        cancelled = await control.cancel(conn, run, body.reason if body else None)
    log.info("run_cancelled", run_id=str(run_id), reason=cancelled.reason)
    return {
        "run_id": run_id,
        "status": RunStatus.CANCELLED,
        "error": cancelled.reason,
        "tasks_cancelled": cancelled.tasks_cancelled,
        "timers_deleted": cancelled.timers_deleted,
    }


async def _visible(
    conn: Connection, principal: Principal, run_id: UUID, *, lock: bool = False
) -> runs.RunRecord:
    missing = f"no run with id {run_id}"
    run = await runs.get(conn, run_id, for_update=lock)
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
