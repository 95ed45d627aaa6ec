"""Runs: status, current step, and the history of every step and action attempt."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from services.api.deps import Db, Limit, Offset
from services.api.routes.submissions import run_summary
from services.api.schemas import RunOut, RunSummary
from workflow_core.errors import Conflict, NotFound
from workflow_core.persistence import revival, runs
from workflow_core.statuses import RunStatus

router = APIRouter(prefix="/runs", tags=["runs"])


def timeline(steps: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every step entered and every action attempted, in the order they began."""
    entries = [
        {
            "at": s["entered_at"],
            "kind": "step",
            "step_id": s["step_id"],
            "seq": s["seq"],
            "status": s["status"],
            "finished_at": s["finished_at"],
            "error": s["error"],
        }
        for s in steps
    ]
    entries += [
        {
            "at": a["started_at"],
            "kind": "action",
            "step_id": a["step_id"],
            "seq": a["step_seq"],
            "status": a["status"],
            "action_index": a["action_index"],
            "action_type": a["action_type"],
            "attempt": a["attempt"],
            "delivery": a["delivery"],
            "finished_at": a["finished_at"],
            "error": a["error"],
        }
        for a in attempts
    ]
    return sorted(entries, key=lambda entry: (entry["at"], entry["kind"] != "step"))


@router.get("/{run_id}", response_model=RunOut, responses={404: {"description": "no such run"}})
async def get_run(run_id: UUID, db: Db) -> dict[str, Any]:
    async with db.reading() as conn:
        run = await runs.get(conn, run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id}")
        steps, attempts = await runs.history(conn, run_id)
    by_seq: dict[int, list[dict[str, Any]]] = {}
    for attempt in attempts:
        by_seq.setdefault(attempt["step_seq"], []).append(attempt)
    return {
        **run_summary(run),
        "submission_id": run.submission_id,
        "event_id": run.event_id,
        "step_seq": run.step_seq,
        "deliveries": run.deliveries,
        "finished_at": run.finished_at,
        "context": run.context,
        "steps": [{**step, "actions": by_seq.get(step["seq"], [])} for step in steps],
        "history": timeline(steps, attempts),
    }


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
