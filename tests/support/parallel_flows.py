"""Workflows with a parallel step, for the integration and end-to-end tests: two branches that
each email, then a final email once they joined."""

from __future__ import annotations

from typing import Any

from tests.support import examples


def email_step(step_id: str, subject: str, **fields: Any) -> dict[str, Any]:
    """An email step whose body is the person's name."""
    return examples.email_step(step_id, subject, body="{data.name}", **fields)


def review_step(step_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "human_task",
        "config": {"title": "Review {data.name}", "assignee": "reviewer"},
        **fields,
    }


def webhook_step(step_id: str, url: str) -> dict[str, Any]:
    """A webhook tried once: a refused connection fails its branch at once."""
    return {
        "id": step_id,
        "type": "auto_action",
        "actions": [
            {"type": "webhook", "config": {"url": url}, "retry": {"max_attempts": 1}},
        ],
    }


def parallel_definition(
    branches: dict[str, list[dict[str, Any]]],
    *,
    join: str = "all",
    template_id: str = "parallel",
) -> dict[str, Any]:
    """`checks` runs `branches` (id -> steps), then `done` emails "All checks done"."""
    return {
        "trigger": {
            "type": "form_submitted",
            "conditions": {"path": "template_id", "op": "==", "value": template_id},
        },
        "initial_step_id": "checks",
        "steps": [
            {
                "id": "checks",
                "type": "parallel",
                "join": join,
                "branches": [{"id": name, "steps": steps} for name, steps in branches.items()],
                "transitions": [{"to": "done"}],
            },
            email_step("done", "All checks done"),
        ],
    }
