"""The three workflows of the soak and the forms that start them. Every form gets recipient
addresses of its own, so that each expected email is one address and the checker can count
deliveries per address as well as per Message-ID."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tests.support.examples import EXAMPLE_WORKFLOW

Kind = Literal["seed", "approval", "wait"]
KINDS: tuple[Kind, ...] = ("seed", "approval", "wait")
WEIGHTS = (2, 1, 1)  # half the forms are the original example
TEMPLATES: dict[Kind, str] = {
    "seed": str(EXAMPLE_WORKFLOW["definition"]["trigger"]["conditions"]["value"]),
    "approval": "chaos_approval",
    "wait": "chaos_wait",
}
ORGS = ("chaos-a", "chaos-b", "chaos-c", "chaos-d")  # spread over SUBMIT_RATE_PER_ORG
DOMAIN = "chaos.test"
PERSON = "chaos-person"


def _trigger(template_id: str) -> dict[str, Any]:
    return {
        "type": "form_submitted",
        "conditions": {"path": "template_id", "op": "==", "value": template_id},
    }


def _email(to_path: str, subject: str) -> dict[str, Any]:
    return {
        "type": "send_email",
        "config": {"to_path": to_path, "subject": subject, "body": "Submission {submission_id}"},
    }


def approval_workflow(webhook_url: str) -> dict[str, Any]:
    """A person approves once the task's notice reached them (the title names the assignee);
    then a ticket, a webhook to the receiver and a confirmation email."""
    return {
        "name": "Chaos approval",
        "definition": {
            "trigger": _trigger(TEMPLATES["approval"]),
            "initial_step_id": "review",
            "steps": [
                {
                    "id": "review",
                    "name": "Approve {data.item}; assignee {data.manager}",
                    "type": "human_task",
                    "config": {
                        "assignee": PERSON,
                        "assignee_email": "{data.manager}",
                        "due_in": "P1D",
                    },
                    "transitions": [
                        {
                            "to": "order",
                            "conditions": {"path": "task.outcome", "op": "==", "value": "approved"},
                        }
                    ],
                },
                {
                    "id": "order",
                    "type": "auto_action",
                    "actions": [
                        {
                            "type": "create_ticket",
                            "config": {"subject": "Buy {data.item} for {data.email}"},
                        },
                        {
                            "type": "webhook",
                            "config": {
                                "url": webhook_url,
                                "body": {
                                    "submission_id": "{submission_id}",
                                    "item": "{data.item}",
                                    "approved_by": "{task.data.by}",
                                },
                            },
                        },
                    ],
                    "transitions": [{"to": "confirm"}],
                },
                {
                    "id": "confirm",
                    "type": "auto_action",
                    "actions": [_email("data.email", "Approved: {data.item}")],
                },
            ],
        },
    }


def wait_workflow() -> dict[str, Any]:
    """A durable three-second wait, then an email."""
    return {
        "name": "Chaos wait",
        "definition": {
            "trigger": _trigger(TEMPLATES["wait"]),
            "initial_step_id": "pause",
            "steps": [
                {
                    "id": "pause",
                    "type": "wait",
                    "config": {"for": "PT3S"},
                    "transitions": [{"to": "notify"}],
                },
                {
                    "id": "notify",
                    "type": "auto_action",
                    "actions": [_email("data.email", "Waited for {submission_id}")],
                },
            ],
        },
    }


def workflows(webhook_url: str) -> list[dict[str, Any]]:
    return [EXAMPLE_WORKFLOW, approval_workflow(webhook_url), wait_workflow()]


@dataclass(frozen=True, slots=True)
class Form:
    n: int
    kind: Kind
    body: dict[str, Any]
    recipients: tuple[str, ...]
    """Who gets an email once the form's run completes: one address per expected email."""


def make_form(n: int, kind: Kind, token: str, rng: random.Random) -> Form:
    data: dict[str, Any] = {
        "email": f"{kind}-{n}-{token}@{DOMAIN}",
        "name": f"Chaos {n}",
        "message": "soak",
    }
    if kind == "approval":
        data.update(manager=f"manager-{n}-{token}@{DOMAIN}", item=f"item {n}")
    body = {"template_id": TEMPLATES[kind], "org_id": rng.choice(ORGS), "data": data}
    return Form(n, kind, body, expected_recipients(kind, data))


def assignee_of(task_title: str) -> str:
    """The address the approval task's notice goes to, read back from the task's title."""
    return task_title.rpartition(" ")[2].lower()


def kind_of(template_id: str) -> Kind | None:
    return next((kind for kind, tid in TEMPLATES.items() if tid == template_id), None)


def expected_recipients(kind: Kind, data: Mapping[str, Any]) -> tuple[str, ...]:
    """The emails a completed run of `kind` sends for a form with `data`, as their recipients
    (lower-cased, as the sink records them)."""
    wanted = ["manager", "email"] if kind == "approval" else ["email"]
    return tuple(str(data.get(name, "")).lower() for name in wanted)
