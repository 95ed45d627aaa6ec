"""The registry of action types. Each action module registers one `ActionType`; the
definition validator, the dry run and the worker all look types up here, so adding an action
type is adding one module to this package."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from workflow_core.actions.base import ActionCall, ActionDeps
from workflow_core.engine.limits import Limits

Executor = Callable[[ActionCall, Any, ActionDeps], Awaitable[dict[str, Any]]]
Previewer = Callable[[Any, Mapping[str, Any], Limits], dict[str, Any]]
Summary = Callable[[dict[str, Any]], dict[str, Any]]


def as_is(result: dict[str, Any]) -> dict[str, Any]:
    return result


@dataclass(frozen=True, slots=True)
class ActionType:
    name: str
    config: type[BaseModel]
    execute: Executor
    preview: Previewer
    """What the action would do with this context, without doing it (for dry runs); its
    rendering bounded by the limits (`TooLarge`)."""
    retryable: bool = True
    reserves_effect: bool = False
    """It reserves its effect in the ledger first (an email): a run's first step has such
    reservations taken with the run itself."""
    history: Summary = as_is
    """What the run's history keeps of a result (the context and the ledger keep it whole)."""


REGISTRY: dict[str, ActionType] = {}


def register(action_type: ActionType) -> ActionType:
    if action_type.name in REGISTRY:
        raise ValueError(f"action type {action_type.name!r} registered twice")
    REGISTRY[action_type.name] = action_type
    return action_type


def get(name: str) -> ActionType | None:
    return REGISTRY.get(name)
