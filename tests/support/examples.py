"""The original design's examples (workflow_core.examples) and small factories around them."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from workflow_core.examples import EXAMPLE_FORM, EXAMPLE_WORKFLOW


def example_workflow(**changes: Any) -> dict[str, Any]:
    workflow = copy.deepcopy(EXAMPLE_WORKFLOW)
    workflow.update(changes)
    return workflow


def example_form(**data: Any) -> dict[str, Any]:
    form = copy.deepcopy(EXAMPLE_FORM)
    form["data"].update(data)
    return form


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


__all__ = ["EXAMPLE_FORM", "EXAMPLE_WORKFLOW", "example_form", "example_workflow", "unique_email"]
