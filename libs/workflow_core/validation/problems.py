"""What validation reports: a problem at a JSON path (`steps[1].transitions[0].to`),
the result of validating a definition, and pydantic's errors turned into problems."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from workflow_core.definitions.models import (
    WorkflowDefinition,
)

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    loc: Loc
    msg: str
    type: str

    @property
    def path(self) -> str:
        return format_path(self.loc)

    def as_dict(self, prefix: Loc = ()) -> dict[str, Any]:
        return {"loc": [*prefix, *self.loc], "path": self.path, "msg": self.msg, "type": self.type}


@dataclass(slots=True)
class ValidationResult:
    definition: WorkflowDefinition | None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.definition is not None and not self.errors


def format_path(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "definition"


def pydantic_problems(error: ValidationError, prefix: Loc = ()) -> Iterator[Problem]:
    for item in error.errors(include_url=False):
        loc = tuple(part for part in item["loc"] if not _is_union_tag(part))
        yield Problem((*prefix, *loc), item["msg"], item["type"])


def _is_union_tag(part: str | int) -> bool:
    # pydantic puts the union member's name into loc ("str", "float", "list[str]" ...).
    return isinstance(part, str) and (
        part in {"str", "float", "int", "list[str]", "none"}
        or part.startswith(("function-", "list[", "dict["))
    )
