"""Dependencies of the routes, as `Annotated` aliases so that signatures read like prose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from uuid import UUID

import redis.asyncio as aioredis
from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workflow_core.adapters.streams import StreamKeys
from workflow_core.coalesce import Coalescer
from workflow_core.errors import Unavailable
from workflow_core.events import Event
from workflow_core.persistence import submissions
from workflow_core.persistence.db import translate_errors
from workflow_core.persistence.pg import Pool
from workflow_core.persistence.submissions import NewSubmission
from workflow_core.relay import FastPublisher
from workflow_core.settings import Settings


class Database:
    """The routes' door to PostgreSQL: a transaction, or a plain connection for reads. Each is
    bounded in time (API_DB_TIMEOUT_SECONDS): a database that stops answering costs a request
    a 503 within that time, never a hang."""

    def __init__(
        self, engine: AsyncEngine, pool: Pool, timeout: float, publisher: FastPublisher
    ) -> None:
        self.engine, self.pool, self.timeout = engine, pool, timeout
        self._publisher = publisher
        # Submissions arriving together are stored with one statement (coalesce.py); under
        # load, those arriving while two statements are out gather for the next one.
        self._submissions: Coalescer[NewSubmission, Event] = Coalescer(
            lambda forms: submissions.create_many(pool, forms), self._store_one, max_in_flight=2
        )

    async def _store_one(self, form: NewSubmission) -> Event:
        [event] = await submissions.create_many(self.pool, [form])
        return event

    async def store_submission(self, form: NewSubmission) -> tuple[UUID, UUID]:
        """Store a submission with its event, then have the event published at once (if that
        fails, the outbox relay publishes it); (submission id, event id)."""
        async with self._bounded(), translate_errors():
            event = await self._submissions(form)
        self._publisher.soon(event)
        return UUID(event.payload["submission_id"]), event.event_id

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
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._bounded(), translate_errors(), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        async with self._bounded(), translate_errors(), self.engine.connect() as conn:
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
