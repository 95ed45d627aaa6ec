"""Workflow definitions: the models, shapes only (their meaning is checked in
workflow_core.validation). Pure: no I/O, and nothing of Flowline's above it."""

from workflow_core.definitions.models import ActionSpec, StepSpec, WorkflowDefinition

__all__ = ["ActionSpec", "StepSpec", "WorkflowDefinition"]
