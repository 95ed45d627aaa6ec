"""Action types: one module each, registered on import (see registry.py)."""

from __future__ import annotations

import importlib
import pkgutil

from workflow_core.actions.registry import REGISTRY, ActionType, get

_NOT_ACTIONS = {"base", "registry"}

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_ACTIONS and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "ActionType", "get"]
