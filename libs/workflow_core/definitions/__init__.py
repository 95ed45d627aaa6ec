"""Workflow definitions: the models and their validation. Pure: no I/O."""

from workflow_core.definitions.models import ActionSpec, StepSpec, WorkflowDefinition
from workflow_core.definitions.validate import Problem, ValidationResult, validate_definition

__all__ = [
    "ActionSpec",
    "Problem",
    "StepSpec",
    "ValidationResult",
    "WorkflowDefinition",
    "validate_definition",
]
