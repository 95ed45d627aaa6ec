"""The one kind of database connection Flowline's processes use at run time: an asyncpg pool.
The hot paths (a submission, a run's start and checkpoint, the relay) send SQL text, one
prepared statement and one round trip each; everything else sends SQLAlchemy Core statements
built from the schema in tables.py (sql.py). Alembic alone uses SQLAlchemy's own engine.

jsonb parameters are JSON text (`json_text`), or any value JSON can hold; jsonb results come
back as Python values. A connection problem, wherever it shows, becomes `Unavailable`
(`translate_errors`)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import orjson

from workflow_core.errors import Unavailable
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

Executor: TypeAlias = "Pool | Connection"
"""What runs a statement: the pool (a connection for the one statement) or a connection (in
the caller's transaction)."""


def json_text(value: Any) -> str:
    """JSON for a jsonb parameter. asyncpg's own UUID type (what it reads back) is not the
    standard one orjson knows, hence the fallback."""
    return orjson.dumps(value, default=str).decode()


def _json_parameter(value: Any) -> str:
    # Text is taken to be JSON already (the hot paths encode whole batches at once).
    return value if isinstance(value, str) else json_text(value)


async def prepare_connection(connection: Connection) -> None:
    """The codecs every Flowline connection has (a pool's do already)."""
    for kind in ("jsonb", "json"):
        await connection.set_type_codec(
            kind, encoder=_json_parameter, decoder=orjson.loads, schema="pg_catalog"
        )


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
    writes whose loss in a PostgreSQL crash is harmless (a run's creation, an email's record:
    the event is not acknowledged until a durable checkpoint, which writes them again)."""

    async def prepare(connection: Connection) -> None:
        await prepare_connection(connection)
        if init is not None:
            await init(connection)

    pool = await asyncpg.create_pool(
        settings.postgres_dsn,
        min_size=1,
        max_size=size,
        reset=_keep_session,
        init=prepare,
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


CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; socket.timeout is a subclass
    TimeoutError,
    socket.gaierror,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.QueryCanceledError,  # statement_timeout: the database is too slow to count on
)


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` means PostgreSQL cannot be reached (rather than a bad query)."""
    return isinstance(error, CONNECTION_ERRORS)


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    try:
        yield
    except Exception as error:
        if is_unavailable(error):
            raise Unavailable(
                f"database unavailable: {type(error).__name__}: {error}".strip()
            ) from error
        raise
