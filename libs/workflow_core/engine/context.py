"""The event context a run sees: what a template or condition path can start with."""

from __future__ import annotations

from typing import Any

CONTEXT_ROOTS = frozenset(
    {
        "submission_id",
        "template_id",
        "org_id",
        "data",
        "submitted_at",
        "event_type",
        "event_id",
        "received_at",
        "workflow_id",
        "run_id",
        "task",
        "steps",
    }
)


def initial_context(
    *,
    submission: dict[str, Any],
    workflow_id: str,
    run_id: str,
    event_type: str = "form_submitted",
) -> dict[str, Any]:
    """The context a run starts with: the submission (or the schedule's tick, whose `data`
    says when it was due), who runs it, and room for step results."""
    return {
        "submission_id": submission.get("submission_id"),
        "template_id": submission.get("template_id"),
        "org_id": submission.get("org_id"),
        "data": submission["data"],
        "submitted_at": submission.get("submitted_at"),
        "event_type": event_type,
        "workflow_id": workflow_id,
        "run_id": run_id,
        "steps": {},
    }


def posted_event_context(*, event: dict[str, Any], workflow_id: str, run_id: str) -> dict[str, Any]:
    """The context of a run started by an event posted to /events: its type, id, organisation,
    `data`, and when it was received (there is no submission)."""
    return {
        "event_id": event["event_id"],
        "event_type": event["event_type"],
        "org_id": event["org_id"],
        "data": event["data"],
        "received_at": event.get("received_at"),
        "workflow_id": workflow_id,
        "run_id": run_id,
        "steps": {},
    }
