"""SQLAlchemy Core statements, built from the schema in tables.py, run on the asyncpg pool
(pool.py): SQLAlchemy writes the SQL, asyncpg carries it. Each statement is compiled for
asyncpg's `$n` parameters; jsonb values are encoded by the pool's codec."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from workflow_core.persistence.pool import Executor

_DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]


def compiled(statement: ClauseElement) -> tuple[str, list[Any]]:
    """The statement's SQL and its parameters in order."""
    compiler = statement.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    assert isinstance(compiler, SQLCompiler)
    values = compiler.construct_params()
    return compiler.string, [values[name] for name in compiler.positiontup or ()]


async def fetch(db: Executor, statement: ClauseElement) -> list[asyncpg.Record]:
    text, arguments = compiled(statement)
    return await db.fetch(text, *arguments)


async def fetchrow(db: Executor, statement: ClauseElement) -> asyncpg.Record | None:
    text, arguments = compiled(statement)
    return await db.fetchrow(text, *arguments)


async def fetchval(db: Executor, statement: ClauseElement) -> Any:
    text, arguments = compiled(statement)
    return await db.fetchval(text, *arguments)


async def execute(db: Executor, statement: ClauseElement) -> int:
    """Runs the statement; how many rows it touched."""
    text, arguments = compiled(statement)
    status = await db.execute(text, *arguments)
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def mapping(record: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(record) if record is not None else None


def typed_columns(table: Table, names: Iterable[str]) -> list[str]:
    """`name TYPE` for each column, as the table declares it: the column list of a
    jsonb_to_recordset() that reads rows of `table` from a JSON parameter."""
    return [f"{name} {table.c[name].type.compile(dialect=_DIALECT)}" for name in names]
