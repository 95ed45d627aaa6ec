"""The database engine (SQLAlchemy 2 async over asyncpg) and the translation of driver errors
into Flowline's: a connection problem is `Unavailable`, whatever layer noticed it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import orjson
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from workflow_core.errors import Unavailable
from workflow_core.settings import Settings

T = TypeVar("T")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(
    settings: Settings,
    *,
    application_name: str,
    pool_size: int | None = None,
    pool_timeout: float | None = None,
) -> AsyncEngine:
    size = pool_size or settings.db_pool_size
    return create_async_engine(
        settings.async_database_url,
        pool_size=size,
        max_overflow=size,
        # The API bounds the wait for a pooled connection like connecting: when PostgreSQL is
        # gone a request gets its 503 quickly instead of queueing.
        pool_timeout=pool_timeout or settings.db_connect_timeout_seconds,
        pool_recycle=1800,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": settings.db_statement_timeout_seconds,
            "server_settings": {
                "application_name": application_name,
                "statement_timeout": str(int(settings.db_statement_timeout_seconds * 1000)),
            },
        },
    )


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
    if isinstance(error, sa_exc.TimeoutError):  # pool checkout timed out
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig.__cause__ or error.orig if error.orig is not None else error
    if isinstance(error, sa_exc.InterfaceError):
        return True
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
