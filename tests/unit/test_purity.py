"""engine/ and definitions/ do no I/O: read from their source, never by importing them."""

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
    assert {"engine/machine.py", "engine/conditions.py", "definitions/validate.py"} <= names


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
