"""A plain asyncpg pool for the hot paths (a submission, a run's checkpoint, the relay): one
prepared statement, one round trip, none of the ORM-level machinery. Everything else goes
through SQLAlchemy (db.py)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import orjson

from workflow_core.persistence.listen import plain_dsn
from workflow_core.settings import Settings

if TYPE_CHECKING:  # the stubs are generic, the runtime classes are not
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    PoolConnection: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    Connection: TypeAlias = (
        asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    )
else:
    Pool, Connection = asyncpg.Pool, asyncpg.Connection
    PoolConnection = asyncpg.pool.PoolConnectionProxy


async def _keep_session(connection: Connection) -> None:
    """The pool's reset: nothing. By default asyncpg resets every connection it takes back
    (unlock advisory locks, close cursors, unlisten, reset settings), one more round trip per
    statement; the hot paths leave no such state (an open transaction is still rolled back)."""


async def create_pool(
    settings: Settings,
    *,
    application_name: str,
    size: int,
    durable: bool = True,
    init: Callable[[Any], Coroutine[Any, Any, None]] | None = None,
) -> Pool:
    """`durable=False` makes its commits return before they are flushed to disk: only for
    writes whose loss in a PostgreSQL crash is harmless (the worker's run inserts: the event
    is not acknowledged until a durable checkpoint, and a lost run is simply created again)."""
    pool = await asyncpg.create_pool(
        plain_dsn(settings.async_database_url),
        min_size=1,
        max_size=size,
        reset=_keep_session,
        init=init,
        timeout=settings.db_connect_timeout_seconds,
        command_timeout=settings.db_statement_timeout_seconds,
        server_settings={
            "application_name": application_name,
            "statement_timeout": str(int(settings.db_statement_timeout_seconds * 1000)),
            "synchronous_commit": "on" if durable else "off",
        },
    )
    assert pool is not None
    return pool


def json_text(value: Any) -> str:
    """JSON for a jsonb parameter. asyncpg's own UUID type (what it reads back) is not the
    standard one orjson knows, hence the fallback."""
    return orjson.dumps(value, default=str).decode()
