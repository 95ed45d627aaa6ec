"""Workflows as files: one workflow per YAML or JSON file, named by a stable `key`.

    key: weekday-report           # required: letters, digits, `.`, `_`, `-`
    name: Weekday report          # optional: the key when left out
    org_id: org_123               # optional: left out, the workflow is of every organisation
    definition: {...}             # the definition, exactly as POST /workflows takes it

Reading, checking and comparing files; `workflows_cli` applies them to the database. A
problem is named `file: json.path: message`, its path pointing into the file."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from services.api import secrets
from workflow_core.destinations import AllowedHosts
from workflow_core.validation import validate_definition
from workflow_core.validation.problems import format_path

SUFFIXES = (".yaml", ".yml", ".json")
FIELDS = frozenset({"key", "name", "org_id", "definition"})
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # as WorkflowKey (schemas.py)


@dataclass(frozen=True, slots=True)
class WorkflowFile:
    path: Path
    key: str
    name: str
    org_id: str | None
    definition: dict[str, Any]


class FileProblems(Exception):
    """Files that cannot be applied; each line is `file: json.path: message`."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def expand(arguments: Iterable[str]) -> list[Path]:
    """The files named, and the workflow files inside the folders named (sorted)."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES))
        else:
            found.append(path)
    return found


def load_all(paths: list[Path], allowed_hosts: AllowedHosts | None = None) -> list[WorkflowFile]:
    """Every file read and checked; `FileProblems` naming each problem of every file."""
    loaded, problems = [], []
    seen: dict[tuple[str | None, str], Path] = {}
    for path in paths:
        try:
            item = load(path, allowed_hosts)
        except FileProblems as error:
            problems.extend(error.lines)
            continue
        scope = (item.org_id, item.key)
        if scope in seen:
            problems.append(f"{path}: key: {item.key!r} is also the key of {seen[scope]}")
            continue
        seen[scope] = path
        loaded.append(item)
    if problems:
        raise FileProblems(problems)
    return loaded


def load(path: Path, allowed_hosts: AllowedHosts | None = None) -> WorkflowFile:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise FileProblems([f"{path}: cannot be read: {error}"]) from None
    return parse(path, text, allowed_hosts)


def parse(path: Path, text: str, allowed_hosts: AllowedHosts | None = None) -> WorkflowFile:
    """The workflow in `text` (the file `path`, whose suffix says JSON or YAML), checked."""
    document = _document(path, text)
    problems = list(_shape_problems(document))
    if problems:
        raise FileProblems([f"{path}: {line}" for line in problems])
    result = validate_definition(document["definition"], allowed_hosts=allowed_hosts)
    if not result.ok:
        raise FileProblems(
            [f"{path}: {format_path(('definition', *p.loc))}: {p.msg}" for p in result.errors]
        )
    return WorkflowFile(
        path,
        document["key"],
        document.get("name") or document["key"],
        document.get("org_id"),
        document["definition"],
    )


def _document(path: Path, text: str) -> dict[str, Any]:
    try:
        raw = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        # YAML's own types (dates, sets) become what JSON would carry.
        document = orjson.loads(orjson.dumps(raw, option=orjson.OPT_NON_STR_KEYS))
    except (orjson.JSONDecodeError, yaml.YAMLError, TypeError) as error:
        raise FileProblems([f"{path}: not valid {_kind(path)}: {error}"]) from None
    if not isinstance(document, dict):
        raise FileProblems([f"{path}: a workflow file holds one object (key, name, definition)"])
    return document


def _kind(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"


def _shape_problems(document: dict[str, Any]) -> Iterator[str]:
    for field in sorted(set(document) - FIELDS):
        yield f"{field}: unknown field; a workflow file has {', '.join(sorted(FIELDS))}"
    key = document.get("key")
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        yield (
            "key: a workflow file needs `key`: up to 100 letters, digits, `.`, `_` or `-`, "
            "that names the workflow for good"
        )
    for field in ("name", "org_id"):
        value = document.get(field)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            yield f"{field}: a non-empty string, or left out"
    if not isinstance(document.get("definition"), dict):
        yield "definition: a workflow file needs `definition`, an object"


def normalized(name: str, definition: dict[str, Any]) -> str:
    """What a diff compares: the name and the definition without its secrets, as sorted JSON."""
    shown, _ = secrets.without_secrets(definition)
    document = {"name": name, "definition": shown}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def unified_diff(before: str | None, after: str, *, old_label: str, new_label: str) -> str:
    """A unified diff of two normalized documents (`before` None: a new workflow)."""
    lines = difflib.unified_diff(
        [] if before is None else before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile="/dev/null" if before is None else old_label,
        tofile=new_label,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def exported(key: str, name: str, org_id: str | None, definition: dict[str, Any]) -> str:
    """The YAML file of a workflow, without its secrets (they are never exported)."""
    shown, hidden = secrets.without_secrets(definition)
    document: dict[str, Any] = {"key": key, "name": name}
    if org_id is not None:
        document["org_id"] = org_id
    document["definition"] = shown
    header = "".join(
        f"# {path} is set and not exported: applying this file keeps it\n" for path in hidden
    )
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def key_for(name: str, workflow_id: object) -> str:
    """A key for a workflow that has none: its name as a slug, and its id's first characters."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:80] or "workflow"
    return f"{slug}-{str(workflow_id)[:8]}"
