"""What the tests of the plain form endpoint and of the approval pages share: an approval flow
whose human task lists its outcomes, a key for a web page, and the links of a task's email."""

from __future__ import annotations

import re
import uuid
from email.message import EmailMessage
from typing import Any

import httpx

from tests.support.smtp import Received

LINK = re.compile(r"https?://\S+/t/[A-Za-z0-9._-]+")


def approval_flow(assignee: str, template_id: str) -> dict[str, Any]:
    """A purchase request a manager approves or rejects from the email; the requester then
    gets an email quoting the manager's comment."""

    def tell(step_id: str, subject: str) -> dict[str, Any]:
        config = {"to_path": "data.email", "subject": subject, "body": "{task.data.comment}"}
        return {
            "id": step_id,
            "type": "auto_action",
            "actions": [{"type": "send_email", "config": config}],
        }

    return {
        "name": f"Approval {template_id}",
        "definition": {
            "trigger": {
                "type": "form_submitted",
                "conditions": {"path": "template_id", "op": "==", "value": template_id},
            },
            "initial_step_id": "review",
            "steps": [
                {
                    "id": "review",
                    "type": "human_task",
                    "config": {
                        "title": "Buy {data.item} for {data.name}?",
                        "assignee_email": assignee,
                        "outcomes": ["approved", "rejected"],
                        "fields": ["item", "amount", "name"],
                    },
                    "transitions": [
                        {
                            "to": "yes",
                            "conditions": {"path": "task.outcome", "op": "==", "value": "approved"},
                        },
                        {"to": "no"},
                    ],
                },
                tell("yes", "Approved: {data.item}"),
                tell("no", "Rejected: {data.item}"),
            ],
        },
    }


async def make_key(
    client: httpx.AsyncClient, org_id: str, *scopes: str, headers: dict[str, str] | None = None,
    **extra: Any,
) -> str:  # fmt: skip
    made = await client.post(
        "/api-keys",
        json={"org_id": org_id, "scopes": list(scopes), **extra},
        headers=headers or {},
    )
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


def org() -> str:
    return f"org_{uuid.uuid4().hex[:8]}"


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the email has no plain-text part"
    return str(part.get_content())  # type: ignore[attr-defined]


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None, "the email has no HTML part"
    return str(part.get_content())  # type: ignore[attr-defined]


def links_of(received: Received) -> dict[str, str]:
    """The task email's links by their label ("Approved", "Rejected", "Open the task")."""
    found: dict[str, str] = {}
    for line in text_of(received.message).splitlines():
        label, _, rest = line.partition(": ")
        match = LINK.fullmatch(rest.strip())
        if match:
            found[label] = match.group(0)
    return found
