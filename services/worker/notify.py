"""The email that tells a human task's assignee about the task. It goes through the same
action path as a workflow's own emails (effect ledger, retries); its text is built from the
stored task, which was rendered once when the task opened and is never rendered again (form
data in a title must not act as a template)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from workflow_core.definitions.models import ActionSpec


def assignee_email(task: Mapping[str, Any], run_id: UUID) -> ActionSpec:
    fields = task.get("fields") or {}
    due = task.get("due_at")
    body = (
        f"A task is waiting for you: {task['title']}\n\n"
        f"{task.get('description') or ''}\n\nTask: {task['id']}\nRun: {run_id}\n"
        + (f"Due: {due.isoformat()}\n" if due is not None else "")
        + f"\nComplete it with POST /tasks/{task['id']}/complete\n"
    )
    return ActionSpec(
        type="send_email",
        config={
            "to": fields.get("assignee_email", ""),
            "subject": f"Task for you: {task['title']}",
            "body": body,
        },
    )
