"""Dotted paths into the event context: `data.email`, `steps.open.ticket_id`, `data.items.0`.

Only dict keys and list indexes are followed, never attributes, so a path cannot reach into
Python objects (`data.__class__` finds nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MISSING: Any = type(
    "Missing", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False}
)()
"""Returned for a path that leads nowhere; distinct from a present `null`."""


def resolve(context: Mapping[str, Any], path: str) -> Any:
    """The value at `path`, or MISSING."""
    if not isinstance(path, str) or not path:
        return MISSING
    current: Any = context
    for part in path.split("."):
        if isinstance(current, Mapping):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list) and _is_index(part):
            index = int(part)
            if not -len(current) <= index < len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def _is_index(part: str) -> bool:
    digits = part[1:] if part.startswith("-") else part
    return digits.isascii() and digits.isdigit()
