"""The original design's example workflow and form, exactly as its README gives them (and
ours repeats), and small factories around them. The tests hold Flowline to them; the benchmark
and the chaos soak run them."""

from __future__ import annotations

import copy
import uuid
from typing import Any

EXAMPLE_WORKFLOW: dict[str, Any] = {
    "name": "Send Email on Form Submission",
    "definition": {
        "trigger": {
            "type": "form_submitted",
            "conditions": {"path": "template_id", "op": "==", "value": "form_submitted"},
        },
        "initial_step_id": "step1",
        "steps": [
            {
                "id": "step1",
                "name": "Send Email Notification",
                "type": "auto_action",
                "actions": [
                    {
                        "type": "send_email",
                        "config": {
                            "to_path": "data.email",
                            "subject": "Form Submission Confirmation - {template_id}",
                            "body": "Hello,\n\nYour form submission has been received.\n\n"
                            "Submission ID: {submission_id}\nTemplate: {template_id}\n\n"
                            "Thank you!",
                        },
                    }
                ],
                "transitions": [],
            }
        ],
    },
}

EXAMPLE_FORM: dict[str, Any] = {
    "template_id": "form_submitted",
    "data": {"email": "user@example.com", "name": "John Doe", "message": "Hello world"},
    "org_id": "org_123",
}


def example_workflow(**changes: Any) -> dict[str, Any]:
    workflow = copy.deepcopy(EXAMPLE_WORKFLOW)
    workflow.update(changes)
    return workflow


def example_form(**data: Any) -> dict[str, Any]:
    form = copy.deepcopy(EXAMPLE_FORM)
    form["data"].update(data)
    return form


def email_step(
    step_id: str, subject: str, body: str = "{data.email}", **fields: Any
) -> dict[str, Any]:
    """An `auto_action` step that emails the run's `data.email`; `fields` go on the step
    (`transitions` ...)."""
    return {
        "id": step_id,
        "type": "auto_action",
        "actions": [
            {
                "type": "send_email",
                "config": {"to_path": "data.email", "subject": subject, "body": body},
            }
        ],
        **fields,
    }


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


__all__ = [
    "EXAMPLE_FORM",
    "EXAMPLE_WORKFLOW",
    "email_step",
    "example_form",
    "example_workflow",
    "unique_email",
]
