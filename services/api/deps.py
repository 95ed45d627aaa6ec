"""Dependencies of the routes, as `Annotated` aliases so that signatures read like prose."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Header, Query, Request
from pydantic import AfterValidator

from services.api.intake import Intake
from workflow_core.adapters.streams import StreamKeys
from workflow_core.errors import Unavailable
from workflow_core.events import Event
from workflow_core.persistence import posted_events
from workflow_core.persistence.pool import Connection, Pool, translate_errors
from workflow_core.persistence.posted_events import StoredEvent
from workflow_core.persistence.submissions import Accepted, NewSubmission
from workflow_core.relay import FastPublisher
from workflow_core.settings import Settings


class Database:
    """The routes' door to PostgreSQL: a transaction, or a plain connection for reads, from the
    process's one asyncpg pool. A read is bounded in time (API_DB_TIMEOUT_SECONDS): a database
    that stops answering costs it a 503 within that time, never a hang. A change waits that
    long at most for a connection, then as long as its statements take
    (DB_STATEMENT_TIMEOUT_SECONDS each): a change that may have committed is never answered
    503 early. Submissions take the hot path (intake.py), bounded the same way."""

    def __init__(
        self,
        pool: Pool,
        timeout: float,
        publisher: FastPublisher,
        *,
        statement_timeout: float,
    ) -> None:
        self.pool, self.timeout = pool, timeout
        self._publisher = publisher
        self._intake = Intake(pool, timeout=timeout, statement_timeout=statement_timeout)

    async def store_submission(self, form: NewSubmission) -> Accepted:
        """Store a submission with its event, then have the event published at once (if that
        fails, the outbox relay publishes it). A form whose organisation used its idempotency
        key in the last 24 hours stores and publishes nothing: it gets the first answer."""
        async with translate_errors():
            accepted = await self._intake(form)
        if accepted.event is not None:
            self._publisher.soon(accepted.event)
        return accepted

    async def store_event(
        self, event: Event, dedup_key: str | None, received_at: datetime
    ) -> StoredEvent:
        """Keep a posted event with its outbox row (one statement), then have it published at
        once (else the relay does). A repeated `dedup_key` stores and publishes nothing."""
        async with self.transaction() as conn:
            stored = await posted_events.store(conn, event, dedup_key, received_at)
        if stored.event is not None:
            self._publisher.soon(stored.event)
        return stored

    @asynccontextmanager
    async def _bounded(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except TimeoutError:
            raise Unavailable(
                f"database unavailable: no answer within {self.timeout:g} s"
            ) from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with translate_errors():
            async with self._bounded():
                conn = await self.pool.acquire()
            try:
                async with conn.transaction():
                    yield conn
            finally:
                await self.pool.release(conn)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Connection]:
        async with self._bounded(), translate_errors(), self.pool.acquire() as conn:
            yield conn


# Dependencies are `async def` on purpose: FastAPI runs plain `def` ones in a thread pool,
# a thread hand-off per request for what is an attribute lookup.
async def _database(request: Request) -> Database:
    return request.app.state.database  # type: ignore[no-any-return]


async def _redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis  # type: ignore[no-any-return]


async def _keys(request: Request) -> StreamKeys:
    return request.app.state.keys  # type: ignore[no-any-return]


async def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


Db = Annotated[Database, Depends(_database)]
Redis = Annotated[aioredis.Redis, Depends(_redis)]
Keys = Annotated[StreamKeys, Depends(_keys)]
AppSettings = Annotated[Settings, Depends(_settings)]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="items to skip")]
# A filter compared with a text column: PostgreSQL text cannot hold NUL, so it is refused here.
Filter = Annotated[str | None, Query(max_length=500, pattern="^[^\x00]*$")]

_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")


def _idempotency_key(key: str | None) -> str | None:
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ValueError("the Idempotency-Key header must be 1 to 255 printable ASCII characters")
    return key


# The client's key for a submission (CONTRACT §8): the same key and organisation within 24
# hours gets the first answer again, and nothing is stored or published twice.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="repeats within 24 hours (same organisation) get the first answer again "
        "and store nothing; 1 to 255 printable ASCII characters",
        json_schema_extra={"minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    ),
    AfterValidator(_idempotency_key),
]
