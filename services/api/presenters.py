"""How runs look in the API's answers: built from records, shared by the routes that show them."""

from __future__ import annotations

from typing import Any

from workflow_core.persistence import runs
from workflow_core.statuses import RunStatus


def run_summary(run: runs.RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "run_id": run.id,
        "workflow_id": run.workflow_id,
        "workflow_version": run.workflow_version,
        "status": run.status,
        "current_step_id": run.current_step_id,
        "waiting_for": run.queued_for if run.status == RunStatus.WAITING else None,
        "error": run.error,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }


def run_view(
    run: runs.RunRecord, steps: list[dict[str, Any]], attempts: list[dict[str, Any]]
) -> dict[str, Any]:
    """A run with its steps (each with its action attempts) and a flat timeline."""
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
