"""Small builders of valid workflow pieces: a test passes only what it cares about."""

from __future__ import annotations

import copy
from typing import Any

from tests.support.examples import EXAMPLE_WORKFLOW
from workflow_core.definitions.models import WorkflowDefinition


def example_definition() -> dict[str, Any]:
    """The definition from the original README, exactly as written there."""
    return copy.deepcopy(EXAMPLE_WORKFLOW["definition"])


def example_context(**data: Any) -> dict[str, Any]:
    """The context of a run started by the original README's example submission."""
    return {
        "submission_id": "5f0c2d7e-0000-4000-8000-000000000001",
        "template_id": "form_submitted",
        "org_id": "org_123",
        "data": {"email": "user@example.com", "name": "John Doe", "message": "Hello world", **data},
        "workflow_id": "5f0c2d7e-0000-4000-8000-000000000002",
        "run_id": "5f0c2d7e-0000-4000-8000-000000000003",
        "steps": {},
    }


def transition(to: str, when: Any = None) -> dict[str, Any]:
    return {"to": to} if when is None else {"to": to, "conditions": when}


def step(
    step_id: str,
    step_type: str = "auto_action",
    *,
    to: tuple[str | dict[str, Any], ...] = (),
    actions: tuple[dict[str, Any], ...] = (),
    **fields: Any,
) -> dict[str, Any]:
    """A step; `to` takes step ids (unconditional) or `transition(...)` dicts."""
    return {
        "id": step_id,
        "type": step_type,
        "actions": list(actions),
        "transitions": [transition(t) if isinstance(t, str) else t for t in to],
        **fields,
    }


def send_email(**config: Any) -> dict[str, Any]:
    return {"type": "send_email", "config": {"to": "someone@example.com", **config}}


def definition_dict(
    *steps: dict[str, Any], initial: str | None = None, trigger: dict[str, Any] | None = None
) -> dict[str, Any]:
    steps = steps or (step("first"),)
    return {
        "trigger": trigger or {"type": "form_submitted"},
        "initial_step_id": initial or steps[0]["id"],
        "steps": list(steps),
    }


def definition(
    *steps: dict[str, Any], initial: str | None = None, trigger: dict[str, Any] | None = None
) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(
        definition_dict(*steps, initial=initial, trigger=trigger)
    )


def cond(path: str, op: str, value: Any) -> dict[str, Any]:
    return {"path": path, "op": op, "value": value}
