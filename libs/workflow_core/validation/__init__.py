"""Validation of a workflow definition with errors that name JSON paths such as
`steps[1].transitions[0].to`. Errors make a definition unusable (the API answers 422);
warnings (a template placeholder that can never resolve) are returned beside a saved one.

Given the deployment's WEBHOOK_ALLOWED_HOSTS (the API passes it), a webhook URL whose host is
written as an address that no webhook may call is an error too: the workers would refuse
every call of it. Without it (the worker's catalog reading stored definitions) that rule is
left to the HTTP adapter, which refuses the call and fails the run with the reason."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from workflow_core.definitions.models import WorkflowDefinition
from workflow_core.destinations import AllowedHosts
from workflow_core.validation.action_configs import check_actions
from workflow_core.validation.conditions import check_conditions
from workflow_core.validation.problems import ValidationResult, pydantic_problems
from workflow_core.validation.steps import check_steps
from workflow_core.validation.templates import unresolvable_placeholders
from workflow_core.validation.triggers import check_schedule, check_throttle, unknown_trigger_type


def validate_definition(raw: Any, *, allowed_hosts: AllowedHosts | None = None) -> ValidationResult:
    """Parse and check `raw`; the definition is returned only when there are no errors.
    `allowed_hosts`: check webhook destinations written as addresses against it."""
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as error:
        return ValidationResult(None, errors=list(pydantic_problems(error)))
    errors = [
        *check_steps(definition),
        *check_conditions(definition),
        *check_actions(definition, allowed_hosts),
        *check_schedule(definition),
        *check_throttle(definition),
    ]
    warnings = [*unknown_trigger_type(definition), *unresolvable_placeholders(definition)]
    return ValidationResult(None if errors else definition, errors, warnings)
