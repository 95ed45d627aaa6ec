"""Helpers for integration tests that drive the pipeline in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.worker.__main__ import serve
from services.worker.worker import Worker
from tests.support.examples import EXAMPLE_WORKFLOW
from workflow_core.adapters import streams
from workflow_core.adapters.streams import StreamKeys
from workflow_core.persistence import outbox, submissions, workflows
from workflow_core.persistence.listen import Listener
from workflow_core.persistence.pool import Connection, create_pool, prepare_connection
from workflow_core.persistence.tables import runs
from workflow_core.relay import OutboxRelay
from workflow_core.settings import Settings


@contextlib.asynccontextmanager
async def flowline_connection(engine: AsyncEngine) -> AsyncIterator[Connection]:
    """A connection to the test's database as Flowline's processes have them (asyncpg, with
    the pool's codecs), for calling the repositories; `engine` stays the tests' SQLAlchemy
    door for looking at tables."""
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(url)
    try:
        await prepare_connection(connection)
        yield connection
    finally:
        await connection.close()


async def create_workflow(
    engine: AsyncEngine,
    definition: dict[str, Any] | None = None,
    *,
    name: str = "test",
    org_id: str | None = None,
) -> UUID:
    async with flowline_connection(engine) as conn, conn.transaction():
        record = await workflows.create(
            conn, name=name, org_id=org_id, definition=definition or EXAMPLE_WORKFLOW["definition"]
        )
    return record.id


async def submit(
    engine: AsyncEngine,
    data: dict[str, Any],
    *,
    template_id: str = "form_submitted",
    org_id: str = "org_123",
) -> tuple[UUID, UUID]:
    async with flowline_connection(engine) as conn:  # what POST /submit does
        return await submissions.create(
            conn, template_id=template_id, org_id=org_id, data=data, now=datetime.now(UTC)
        )


async def publish_all(engine: AsyncEngine, settings: Settings) -> int:
    redis = streams.client(settings)
    pool = await create_pool(settings, application_name="flowline-tests", size=2)
    try:
        relay = OutboxRelay(
            pool,
            redis,
            StreamKeys.from_settings(settings),
            Listener(settings.postgres_dsn).channel(outbox.CHANNEL),
        )
        total = 0
        while count := await relay.publish_batch(everything=True):
            total += count
        return total
    finally:
        await redis.aclose()
        await pool.close()


async def run_worker_until_drained(settings: Settings, timeout: float = 30.0) -> Worker:
    """Run a worker in this process until the stream has nothing left for the group."""
    stop = asyncio.Event()
    return await asyncio.wait_for(serve(settings, stop, burst=True), timeout)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[asyncio.Task[Worker]]:
    """A worker running in this process until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    try:
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 30)
        except TimeoutError:
            _print_stacks("the worker did not stop within 30 s")
            raise


def _print_stacks(why: str) -> None:
    """Where every task is stuck (a hang is otherwise a bare TimeoutError)."""
    print(f"--- {why}; tasks:", flush=True)
    for task in asyncio.all_tasks():
        print(f"* {task.get_name()}: {task.get_coro()}", flush=True)
        task.print_stack(limit=12)


async def run_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(select(runs).order_by(runs.c.created_at)))


async def pending_count(redis: aioredis.Redis, keys: StreamKeys) -> int:
    return int((await redis.xpending(keys.stream, keys.group))["pending"])
