"""Secrets in a workflow definition are write-only (CONTRACT §7): a webhook's `secret` is never
in an answer, and a new version that leaves it out keeps the one it had."""

from __future__ import annotations

import copy
from typing import Any

SECRET = "secret"


def _webhooks(definition: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(step id, action index, config) of every webhook action."""
    found = []
    for step in definition.get("steps") or []:
        if not isinstance(step, dict):
            continue
        for index, action in enumerate(step.get("actions") or []):
            if isinstance(action, dict) and action.get("type") == "webhook":
                config = action.get("config")
                if isinstance(config, dict):
                    found.append((str(step.get("id")), index, config))
    return found


def without_secrets(definition: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The definition without its secrets, and the JSON paths where one was set."""
    shown = copy.deepcopy(definition)
    paths = []
    for position, step in enumerate(shown.get("steps") or []):
        for index, action in enumerate(step.get("actions") or [] if isinstance(step, dict) else []):
            config = action.get("config") if isinstance(action, dict) else None
            if isinstance(config, dict) and config.pop(SECRET, None) is not None:
                paths.append(f"steps[{position}].actions[{index}].config.secret")
    return shown, paths


def carried_over(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """`new`, where a webhook without a `secret` key takes the secret of the webhook at the
    same place (step id, action index) in `old`. `"secret": null` removes it."""
    kept = {(step, index): config.get(SECRET) for step, index, config in _webhooks(old)}
    result = copy.deepcopy(new)
    for step, index, config in _webhooks(result):
        if SECRET not in config and kept.get((step, index)):
            config[SECRET] = kept[(step, index)]
        elif SECRET in config and config[SECRET] is None:
            del config[SECRET]
    return result
