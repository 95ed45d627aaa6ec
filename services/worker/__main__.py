"""`python -m services.worker`: consume the events stream and run workflows until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import start_http_server

from services.worker.catalog import CHANNEL as CATALOG_CHANNEL
from services.worker.catalog import Catalog
from services.worker.config import WorkerConfig
from services.worker.handler import EventHandler
from services.worker.heartbeat import Heartbeat, LivenessFile
from services.worker.housekeeping import purge_old_runs
from services.worker.notify import LinkMaker
from services.worker.runner import RunDriver, utcnow
from services.worker.scheduler import ScheduleFirer, TimerScheduler
from services.worker.store import RunStore
from services.worker.stretch import Stretches
from services.worker.worker import Worker
from workflow_core import events, metrics, tracing
from workflow_core.actions.base import ActionDeps
from workflow_core.adapters import sent_spool, streams
from workflow_core.adapters.http import HttpxClient
from workflow_core.adapters.smtp import SmtpMailer
from workflow_core.adapters.streams import Entry, StreamKeys
from workflow_core.definitions.models import RetryPolicy
from workflow_core.ids import parse_uuid
from workflow_core.log import configure_logging, get_logger
from workflow_core.persistence import outbox, runs, timers
from workflow_core.persistence.effects import DbEffectLedger
from workflow_core.persistence.listen import Listener
from workflow_core.persistence.migrate import migrate_at_start
from workflow_core.persistence.pool import Pool, create_pool, translate_errors
from workflow_core.persistence.records import DbRecords
from workflow_core.relay import OutboxRelay
from workflow_core.runtime import freeze_startup_objects
from workflow_core.runtime.pacing import settle
from workflow_core.sampler import Sampler
from workflow_core.settings import Settings, links_off_warning, load_settings
from workflow_core.version import command_line

log = get_logger("services.worker")


async def serve(settings: Settings, stop: asyncio.Event, *, burst: bool = False) -> Worker:
    """Run a worker until `stop` is set (or, with `burst`, until the stream is drained)."""
    await migrate_at_start(settings)
    async with contextlib.AsyncExitStack() as resources:
        serve_metrics(settings, resources)
        parts = await _open(settings, resources)
        return await _consume(settings, parts, stop, burst=burst)


def serve_metrics(settings: Settings, resources: contextlib.AsyncExitStack) -> None:
    """This worker's /metrics on WORKER_METRICS_HOST:WORKER_METRICS_PORT (a thread of
    prometheus-client's), unless the port is 0. A port that cannot be had is a warning, not a
    stop: the worker's work matters more than its figures."""
    if not settings.worker_metrics_port:
        return
    try:
        server, thread = start_http_server(
            settings.worker_metrics_port, settings.worker_metrics_host, registry=metrics.REGISTRY
        )
    except OSError as error:
        log.warning(
            "worker_metrics_unavailable",
            host=settings.worker_metrics_host,
            port=settings.worker_metrics_port,
            error=f"{type(error).__name__}: {error}",
            hint="another process holds the port: give each worker its own WORKER_METRICS_PORT",
        )
        return
    log.info(
        "worker_metrics_serving",
        url=f"http://{settings.worker_metrics_host}:{settings.worker_metrics_port}/metrics",
    )

    async def stop() -> None:
        await asyncio.to_thread(server.shutdown)  # it polls every half second
        server.server_close()
        thread.join(timeout=2)

    resources.push_async_callback(stop)


@dataclass(frozen=True, slots=True)
class _Parts:
    pool: Pool
    eager_pool: Pool
    listener: Listener
    redis: aioredis.Redis
    reader_redis: aioredis.Redis
    keys: StreamKeys
    deps: ActionDeps
    ledger: DbEffectLedger


async def _open(settings: Settings, resources: contextlib.AsyncExitStack) -> _Parts:
    """Connections and clients, each closed by `resources` in the reverse order."""
    pool = await create_pool(
        settings,
        application_name="flowline-worker",
        size=min(settings.worker_concurrency, settings.db_pool_size * 2),
    )
    resources.push_async_callback(pool.close)
    # Event starts and email records need not wait for the disk (see pool.create_pool): a
    # commit less on the way from an event to its email.
    eager_pool = await create_pool(
        settings,
        application_name="flowline-worker",
        size=max(2, settings.db_pool_size // 2),
        durable=False,
    )
    resources.push_async_callback(eager_pool.close)
    # One LISTEN connection for the relay, the catalog and the timers.
    listener = await resources.enter_async_context(Listener(settings.postgres_dsn))
    redis = streams.client(settings)
    resources.push_async_callback(redis.aclose)
    reader_redis = streams.client(
        settings, max_connections=2, socket_timeout=settings.worker_block_ms / 1000 + 10
    )
    resources.push_async_callback(reader_redis.aclose)
    mailer = SmtpMailer.from_settings(settings)
    resources.push_async_callback(mailer.close)
    http = HttpxClient(
        allowed=settings.allowed_webhook_hosts,
        json_max_bytes=settings.webhook_response_max_bytes,
    )
    resources.push_async_callback(http.close)
    ledger = _ledger(settings, pool, eager_pool, redis)
    deps = ActionDeps(
        mailer=mailer,
        http=http,
        records=DbRecords(pool),
        ledger=ledger,
        from_email=settings.from_email,
        now=utcnow,
        settings={
            "webhook_timeout_seconds": settings.webhook_timeout_seconds,
            "webhook_response_max_bytes": settings.webhook_response_max_bytes,
        },
    )
    keys = StreamKeys.from_settings(settings)
    return _Parts(pool, eager_pool, listener, redis, reader_redis, keys, deps, ledger)


def _ledger(
    settings: Settings, pool: Pool, eager_pool: Pool, redis: aioredis.Redis
) -> DbEffectLedger:
    """The effect ledger of this process, with the two places it notes a 250 in when
    PostgreSQL cannot take its record: Redis, and a file of its own in WORKER_SPOOL_DIR."""
    # A restarted worker is a new owner: what its previous life held is taken over once that
    # life's heartbeat is old.
    owner = f"{settings.consumer_name}/{uuid.uuid4().hex[:8]}"
    spool_dir = sent_spool.directory_for(
        settings.spool_dir, settings.database_name, settings.redis_stream_name
    )
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a warning, not a stop: Redis still takes the notes
        log.warning("worker_spool_unavailable", path=str(spool_dir), error=str(error))
    return DbEffectLedger(
        pool,
        owner=owner,
        dead_after=settings.worker_dead_after_seconds,
        eager_pool=eager_pool,
        notes=streams.SentNotes(redis, StreamKeys.from_settings(settings)),
        spool=sent_spool.SentSpool(spool_dir, owner),
    )


async def _consume(
    settings: Settings, parts: _Parts, stop: asyncio.Event, *, burst: bool
) -> Worker:
    liveness = LivenessFile(settings.worker_health_file)
    heartbeat = Heartbeat(
        parts.pool,
        parts.ledger,
        consumer=settings.consumer_name,
        interval=settings.worker_heartbeat_seconds,
        liveness=liveness,
    )
    await heartbeat.beat()  # alive before anything is reserved in its name
    # What a previous life of this worker (a restarted container keeps its files) sent and
    # could only note locally is recorded before another worker may take it over.
    await parts.ledger.settle_spooled()
    liveness.touch()
    driver = _run_driver(settings, parts)
    relay = OutboxRelay.from_settings(parts.pool, parts.redis, parts.listener, settings)

    async def fail_runs(entry: Entry, reason: str) -> None:
        await fail_runs_of(parts.pool, entry, reason)

    async def probe() -> None:
        async with translate_errors():
            await parts.pool.fetchval("SELECT 1")

    worker = Worker(
        parts.redis,
        parts.reader_redis,
        parts.keys,
        EventHandler(driver).handle,
        WorkerConfig.from_settings(settings),
        on_dead_letter=fail_runs,
        database_probe=probe,
        on_redis_reset=relay.reconcile_soon,
    )
    background_stop = asyncio.Event()
    background = [
        asyncio.create_task(relay.run(background_stop), name="relay"),
        asyncio.create_task(heartbeat.run(background_stop), name="heartbeat"),
        *_database_chores(settings, parts, background_stop),
    ]
    try:
        await worker.run(stop, burst=burst)
    finally:
        background_stop.set()
        await settle(background, cancel=False)
        liveness.remove()
        await relay.drain(timeout=2.0)
        await heartbeat.retire()
        parts.ledger.close_spool()
    return worker


def _run_driver(settings: Settings, parts: _Parts) -> RunDriver:
    """What turns an event into runs and drives them: the catalog of workflows, the run store,
    and the stretches of steps between two resting points."""
    retry = RetryPolicy(
        max_attempts=settings.action_max_attempts,
        initial_delay=settings.action_retry_initial_seconds,
        max_delay=settings.action_retry_max_seconds,
    )
    catalog = Catalog(parts.pool, parts.listener.channel(CATALOG_CHANNEL))
    store = RunStore(parts.pool, parts.eager_pool, parts.ledger)
    stretches = Stretches(
        store,
        parts.deps,
        parts.ledger,
        step_budget=settings.run_step_budget,
        retry_policy=retry,
        now=utcnow,
        links=LinkMaker.from_settings(settings),
        limits=settings.limits,
    )
    return RunDriver(store, catalog, stretches, parts.ledger, step_budget=settings.run_step_budget)


def _database_chores(
    settings: Settings, parts: _Parts, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """The loops beside the consumers that only need PostgreSQL (and Redis for the sampler):
    timers, schedules, the metrics sampler and, when RUN_RETENTION_DAYS is set, the purge of
    old runs."""
    scheduler = TimerScheduler(parts.pool, parts.listener.channel(timers.CHANNEL))
    schedules_due = ScheduleFirer(
        parts.pool,
        poll_seconds=settings.schedule_poll_seconds,
        catch_up_limit=settings.schedule_catch_up_limit,
    )
    sampler = Sampler(parts.pool, parts.redis, parts.keys)
    chores = [
        asyncio.create_task(scheduler.run(stop), name="timers"),
        asyncio.create_task(schedules_due.run(stop), name="schedules"),
        asyncio.create_task(
            sampler.run(stop, settings.metrics_sample_seconds), name="metrics-sampler"
        ),
    ]
    if settings.run_retention_days:
        purge = purge_old_runs(
            parts.pool,
            retention_days=settings.run_retention_days,
            interval=settings.housekeeping_interval_seconds,
            stop=stop,
        )
        chores.append(asyncio.create_task(purge, name="run-retention"))
    return chores


async def fail_runs_of(pool: Pool, entry: Entry, reason: str) -> None:
    """Mark failed the runs a dead-lettered entry was driving, when it names any, and the event
    taken (it was handled: the reconcile sweep must not publish it again)."""
    try:
        event = events.from_fields(entry.fields)
    except events.MalformedEvent:
        return
    message = f"event {entry.id} dead-lettered: {reason}"
    async with translate_errors(), pool.acquire() as conn, conn.transaction():
        await outbox.mark_taken(conn, event.event_id)
        if event.type == events.RUN_RESUME:
            run_id = parse_uuid(str(event.payload.get("run_id")))
            if run_id is not None:
                await runs.mark_failed(conn, run_id, message)
        else:
            await runs.fail_event_runs(conn, event.event_id, message)


def main() -> None:
    command_line(
        "python -m services.worker", "Consume the events stream and run Flowline's workflows."
    ).parse_args()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    tracing.configure(settings.otel_enabled, "flowline-worker")
    if warning := links_off_warning(settings):
        log.warning("task_links_off", detail=warning)
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

    try:
        asyncio.run(run())
    finally:
        tracing.shutdown()  # the last spans go out before the process ends
    sys.exit(0)


if __name__ == "__main__":
    main()
