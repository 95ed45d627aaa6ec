"""The pure core's shape, read from the source, never by importing it:
- engine/ and definitions/ do no I/O, not even through what they import (transitively);
- inside the core imports only run down: definitions < engine < actions < (validation,
  dryrun), the small shared modules (errors, ids, events, email_format, statuses,
  destinations) below them all;
- no import cycle between these packages."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "libs" / "workflow_core"
PURE_PACKAGES = ("engine", "definitions")
FORBIDDEN = frozenset({"asyncio", "sqlalchemy", "redis", "httpx", "aiosmtplib", "asyncpg"})
_DYNAMIC_IMPORTS = frozenset({"import_module", "__import__"})


def imported_modules(source: str) -> Iterator[str]:
    """Every absolute module name `source` imports, at any depth, statically or by name."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif isinstance(node, ast.Call) and (name := _dynamic_import(node)):
            yield name


def _dynamic_import(call: ast.Call) -> str | None:
    """The name in `importlib.import_module("x")` or `__import__("x")`, if literal."""
    if _called_name(call.func) not in _DYNAMIC_IMPORTS or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def forbidden_imports(source: str) -> set[str]:
    return {name for name in imported_modules(source) if name.split(".")[0] in FORBIDDEN}


def pure_sources() -> list[Path]:
    return sorted(path for package in PURE_PACKAGES for path in (LIBRARY / package).rglob("*.py"))


def test_the_pure_packages_are_found() -> None:
    names = {path.relative_to(LIBRARY).as_posix() for path in pure_sources()}
    assert {"engine/machine.py", "engine/conditions.py", "definitions/models.py"} <= names


@pytest.mark.parametrize(
    "path", pure_sources(), ids=lambda path: path.relative_to(LIBRARY).as_posix()
)
def test_a_pure_module_imports_no_io_library(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8")) == set()


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import asyncio", {"asyncio"}),
        ("import redis.asyncio as redis", {"redis.asyncio"}),
        ("from sqlalchemy.orm import Session", {"sqlalchemy.orm"}),
        ("import json, httpx", {"httpx"}),
        ("def send():\n    import aiosmtplib\n", {"aiosmtplib"}),
        ("if TYPE_CHECKING:\n    from asyncpg import Pool\n", {"asyncpg"}),
        ("importlib.import_module('asyncpg')", {"asyncpg"}),
        ("__import__('httpx')", {"httpx"}),
        ("import asyncio_extras\nfrom . import asyncio\nimport json", set()),
        ("from .redis import keys\nfrom workflow_core.engine import paths", set()),
    ],
)
def test_the_import_check_itself(source: str, found: set[str]) -> None:
    assert forbidden_imports(source) == found


# -- layers ---------------------------------------------------------------------------------

SHARED = frozenset({"errors", "ids", "events", "email_format", "statuses", "destinations"})
LAYERS = {"definitions": 0, "engine": 1, "actions": 2, "validation": 3, "dryrun": 3}


def core_unit(module: str) -> str | None:
    """The package (or top module) of workflow_core that `module` belongs to, or None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "workflow_core" and len(parts) > 1 else None


def core_imports(path: Path) -> set[str]:
    """The workflow_core modules `path` imports (absolute imports: the project uses no other)."""
    return {
        name
        for name in imported_modules(path.read_text(encoding="utf-8"))
        if core_unit(name) is not None
    }


def module_path(module: str) -> Path | None:
    relative = Path(*module.split(".")[1:])
    for candidate in (LIBRARY / relative.with_suffix(".py"), LIBRARY / relative / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def layered_sources() -> list[Path]:
    found = []
    for unit in LAYERS:
        package = LIBRARY / unit
        found += sorted(package.rglob("*.py")) if package.is_dir() else [LIBRARY / f"{unit}.py"]
    return found


def _unit_of(path: Path) -> str:
    return path.relative_to(LIBRARY).parts[0].removesuffix(".py")


@pytest.mark.parametrize(
    "path", layered_sources(), ids=lambda path: path.relative_to(LIBRARY).as_posix()
)
def test_imports_only_run_down_the_layers(path: Path) -> None:
    unit = _unit_of(path)
    upward = {
        module
        for module in core_imports(path)
        if (other := core_unit(module)) not in SHARED
        and (
            other not in LAYERS
            or LAYERS[other] > LAYERS[unit]
            or (LAYERS[other] == LAYERS[unit] and other != unit)
        )
    }
    assert upward == set(), f"{unit} may import only what lies below it"


def transitive_imports(start: Path) -> set[str]:
    """Every module `start` reaches through workflow_core's own modules, and the outside
    modules those import."""
    seen: set[str] = set()
    outside: set[str] = set()
    stack = [start]
    visited: set[Path] = set()
    while stack:
        path = stack.pop()
        if path in visited:
            continue
        visited.add(path)
        for name in imported_modules(path.read_text(encoding="utf-8")):
            if core_unit(name) is None:
                outside.add(name)
                continue
            seen.add(name)
            found = module_path(name)
            if found is not None:
                stack.append(found)
    return seen | outside


@pytest.mark.parametrize(
    "path", pure_sources(), ids=lambda path: path.relative_to(LIBRARY).as_posix()
)
def test_a_pure_module_reaches_no_io_library_through_what_it_imports(path: Path) -> None:
    reached = transitive_imports(path)
    assert {name for name in reached if name.split(".")[0] in FORBIDDEN} == set()


def import_graph() -> dict[str, set[str]]:
    """Package -> the packages it imports, for every package and module of workflow_core."""
    graph: dict[str, set[str]] = {}
    for path in LIBRARY.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        unit = _unit_of(path)
        targets = {core_unit(module) for module in core_imports(path)}
        graph.setdefault(unit, set()).update(t for t in targets if t and t != unit)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in `graph` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_the_core_packages() -> None:
    assert find_cycle(import_graph()) is None


def test_the_cycle_check_itself() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
