"""Checks of each action: a known type, and a config its type accepts (with the deployment's
allowed webhook hosts when given)."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import ValidationError

from workflow_core import actions
from workflow_core.definitions.models import (
    WorkflowDefinition,
)
from workflow_core.destinations import ALLOWED_HOSTS, AllowedHosts
from workflow_core.validation.problems import Loc, Problem, pydantic_problems
from workflow_core.validation.steps import located_steps


def check_actions(
    definition: WorkflowDefinition, allowed_hosts: AllowedHosts | None
) -> Iterator[Problem]:
    context = None if allowed_hosts is None else {ALLOWED_HOSTS: allowed_hosts}
    for item in located_steps(definition):
        for a_index, action in enumerate(item.step.actions):
            loc: Loc = (*item.loc, "actions", a_index)
            action_type = actions.get(action.type)
            if action_type is None:
                yield Problem(
                    (*loc, "type"),
                    f"unknown action type {action.type!r}; use one of "
                    f"{', '.join(sorted(actions.REGISTRY))}",
                    "unknown_action",
                )
                continue
            try:
                action_type.config.model_validate(action.config, context=context)
            except ValidationError as error:
                yield from pydantic_problems(error, (*loc, "config"))
