"""What every request body shares: JSON documents PostgreSQL can store faithfully
(`check_document`), bounded text, and the `examples` the OpenAPI pages offer."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
)

MAX_DEPTH = 64


MAX_INT4 = 2**31 - 1


# Half of a UTF-16 pair with no other half: JSON can spell it (`"\ud800"`), UTF-8 cannot.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def check_document(value: Any, depth: int = 0) -> Any:
    """Refuse what PostgreSQL's JSONB cannot store faithfully: NUL characters, lone UTF-16
    surrogates, NaN/Infinity, and nesting deeper than MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL (\\u0000) characters")
        if _LONE_SURROGATE.search(value):
            raise ValueError("text must not contain unpaired surrogates such as \\ud800")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise ValueError("whole numbers must fit in 64 bits")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_document(key, depth + 1)
            check_document(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_document(item, depth + 1)
    return value


Document = Annotated[dict[str, Any], AfterValidator(check_document)]


Text = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(check_document)]


OptionalText = Text | None


def with_examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})
