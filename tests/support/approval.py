"""The approval workflow the README walks through with curl, for the end-to-end tests."""

from __future__ import annotations

from typing import Any


def approval_workflow(webhook_url: str) -> dict[str, Any]:
    def email(step_id: str, subject: str, body: str, to_path: str = "data.email") -> dict[str, Any]:
        return {
            "id": step_id,
            "type": "auto_action",
            "actions": [
                {
                    "type": "send_email",
                    "config": {"to_path": to_path, "subject": subject, "body": body},
                }
            ],
        }

    return {
        "name": "Purchase approval",
        "definition": {
            "trigger": {
                "type": "form_submitted",
                "conditions": {"path": "template_id", "op": "==", "value": "purchase_request"},
            },
            "initial_step_id": "review",
            "steps": [
                {
                    "id": "review",
                    "name": "Approve {data.item} for {data.name}",
                    "type": "human_task",
                    "config": {
                        "assignee": "manager",
                        "assignee_email": "manager@example.com",
                        "due_in": "P2D",
                    },
                    "transitions": [
                        {
                            "to": "order",
                            "conditions": {"path": "task.outcome", "op": "==", "value": "approved"},
                        },
                        {
                            "to": "escalate",
                            "conditions": {"path": "task.outcome", "op": "==", "value": "timeout"},
                        },
                        {"to": "decline"},
                    ],
                },
                {
                    "id": "order",
                    "name": "Order it",
                    "type": "auto_action",
                    "actions": [
                        {
                            "type": "create_ticket",
                            "config": {
                                "subject": "Buy {data.item} for {data.name}",
                                "priority": "high",
                                "fields": {
                                    "amount": "{data.amount}",
                                    "approved_by": "{task.data.by}",
                                },
                            },
                        },
                        {
                            "type": "webhook",
                            "config": {
                                "url": webhook_url,
                                "body": {
                                    "item": "{data.item}",
                                    "amount": "{data.amount}",
                                    "requested_by": "{data.email}",
                                },
                            },
                        },
                    ],
                    "transitions": [{"to": "confirm"}],
                },
                email(
                    "confirm",
                    "Approved: {data.item}",
                    "Your request is approved (ticket {steps.order.ticket_id}).\n{task.data.note}",
                ),
                email("decline", "Declined: {data.item}", "Sorry: {task.data.note}"),
                email(
                    "escalate",
                    "Nobody answered about {data.item}",
                    "Please decide.",
                    to_path="data.manager_of_manager",
                ),
            ],
        },
    }


def purchase_form(email: str, **data: Any) -> dict[str, Any]:
    return {
        "template_id": "purchase_request",
        "org_id": "org_123",
        "data": {
            "email": email,
            "name": "Ada",
            "item": "a laptop",
            "amount": 1200,
            "manager_of_manager": "director@example.com",
            **data,
        },
    }
