"""`python -m services.worker`: consume the events stream and run workflows until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid

from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.worker.catalog import Catalog
from services.worker.handler import EventHandler
from services.worker.runner import RunDriver, utcnow
from services.worker.scheduler import TimerScheduler
from services.worker.worker import Worker, WorkerConfig, settle
from workflow_core import events
from workflow_core.actions.base import ActionDeps
from workflow_core.adapters import streams
from workflow_core.adapters.http import HttpxClient
from workflow_core.adapters.smtp import SmtpMailer
from workflow_core.adapters.streams import Entry, StreamKeys
from workflow_core.definitions.models import RetryPolicy
from workflow_core.ids import parse_uuid
from workflow_core.log import configure_logging, get_logger
from workflow_core.persistence import pg, runs
from workflow_core.persistence.db import create_engine, translate_errors
from workflow_core.persistence.effects import DbEffectLedger, prepare_connection
from workflow_core.persistence.migrate import migrate_at_start
from workflow_core.persistence.records import DbRecords
from workflow_core.persistence.tables import runs as runs_table
from workflow_core.relay import OutboxRelay
from workflow_core.runtime import freeze_startup_objects
from workflow_core.settings import Settings, load_settings

log = get_logger("services.worker")


async def serve(settings: Settings, stop: asyncio.Event, *, burst: bool = False) -> Worker:
    """Run a worker until `stop` is set (or, with `burst`, until the stream is drained)."""
    await migrate_at_start(settings)
    # The hot path (runs, claims, checkpoints, the relay) goes through the asyncpg pool; the
    # engine serves the rest (resumes, records, the catalog), so it can stay small.
    engine = create_engine(
        settings,
        application_name="flowline-worker",
        pool_size=max(2, settings.db_pool_size // 2),
        pool_timeout=60,
    )
    pool = await pg.create_pool(
        settings,
        application_name="flowline-worker",
        size=min(settings.worker_concurrency, settings.db_pool_size * 2),
        init=prepare_connection,
    )
    # Run inserts need not wait for the disk (see pg.create_pool): a commit less on the way
    # from an event to its email.
    eager_pool = await pg.create_pool(
        settings,
        application_name="flowline-worker",
        size=max(2, settings.db_pool_size // 2),
        durable=False,
    )
    redis = streams.client(settings)
    reader_redis = streams.client(
        settings, max_connections=2, socket_timeout=settings.worker_block_ms / 1000 + 10
    )
    keys = StreamKeys.from_settings(settings)
    mailer = SmtpMailer.from_settings(settings)
    http = HttpxClient()
    deps = ActionDeps(
        mailer=mailer,
        http=http,
        records=DbRecords(engine),
        # A restarted worker is a new owner; a reservation outlives any live SMTP transaction.
        ledger=DbEffectLedger(
            pool,
            owner=f"{settings.consumer_name}/{uuid.uuid4().hex[:8]}",
            stale_after=3 * settings.smtp_timeout_seconds + 5,
        ),
        from_email=settings.from_email,
        now=utcnow,
        settings={"webhook_timeout_seconds": settings.webhook_timeout_seconds},
    )
    retry = RetryPolicy(
        max_attempts=settings.action_max_attempts,
        initial_delay=settings.action_retry_initial_seconds,
        max_delay=settings.action_retry_max_seconds,
    )
    background_stop = asyncio.Event()
    async with Catalog(engine, dsn=settings.async_database_url) as catalog:
        driver = RunDriver(
            engine,
            pool,
            eager_pool,
            catalog,
            deps,
            step_budget=settings.run_step_budget,
            retry_policy=retry,
        )

        async def fail_runs(entry: Entry, reason: str) -> None:
            await fail_runs_of(engine, entry, reason)

        async def probe() -> None:
            async with translate_errors(), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        worker = Worker(
            redis,
            reader_redis,
            keys,
            EventHandler(driver).handle,
            WorkerConfig.from_settings(settings),
            on_dead_letter=fail_runs,
            database_probe=probe,
        )
        relay = OutboxRelay.from_settings(pool, redis, settings)
        scheduler = TimerScheduler(engine, dsn=settings.async_database_url)
        background = [
            asyncio.create_task(relay.run(background_stop), name="relay"),
            asyncio.create_task(scheduler.run(background_stop), name="timers"),
        ]
        try:
            await worker.run(stop, burst=burst)
        finally:
            background_stop.set()
            await settle(background, cancel=False)
            await relay.drain(timeout=2.0)
            await mailer.close()
            await http.close()
            await redis.aclose()
            await reader_redis.aclose()
            await pool.close()
            await eager_pool.close()
            await engine.dispose()
    return worker


async def fail_runs_of(engine: AsyncEngine, entry: Entry, reason: str) -> None:
    """Mark failed the runs a dead-lettered entry was driving, when it names any."""
    try:
        event = events.from_fields(entry.fields)
    except events.MalformedEvent:
        return
    message = f"event {entry.id} dead-lettered: {reason}"
    async with translate_errors(), engine.begin() as conn:
        if event.type == events.RUN_RESUME:
            run_id = parse_uuid(str(event.payload.get("run_id")))
            if run_id is not None:
                await runs.mark_failed(conn, run_id, message)
        else:
            await conn.execute(
                update(runs_table)
                .where(
                    runs_table.c.event_id == event.event_id,
                    runs_table.c.status.notin_(runs.FINISHED),
                )
                .values(
                    status=runs.FAILED,
                    error=message,
                    finished_at=func.now(),
                    updated_at=func.now(),
                    revision=runs_table.c.revision + 1,
                )
            )


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    freeze_startup_objects()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop)

    asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
