"""Housekeeping, in every worker every HOUSEKEEPING_INTERVAL_SECONDS: trim acknowledged stream
history older than STREAM_RETENTION_SECONDS (never an entry a group still needs) and forget
consumers of workers that are gone (only those with nothing pending); with RUN_RETENTION_DAYS,
purge the runs that finished longer ago than that, in bounded batches (several workers may do
it at once: each batch skips the runs another one holds)."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from services.worker.config import WorkerConfig
from workflow_core import metrics
from workflow_core.adapters import stream_housekeeping
from workflow_core.adapters.streams import REDIS_ERRORS, StreamKeys
from workflow_core.log import get_logger
from workflow_core.persistence import control
from workflow_core.persistence.pool import Pool, translate_errors
from workflow_core.runtime.pacing import sleep_unless

log = get_logger(__name__)


async def keep_house(
    redis: aioredis.Redis, keys: StreamKeys, config: WorkerConfig, stop: asyncio.Event
) -> None:
    while not await sleep_unless(stop, config.housekeeping_interval_seconds):
        try:
            trimmed = await stream_housekeeping.trim(
                redis,
                keys,
                keep_seconds=config.stream_retention_seconds,
                now_ms=int(time.time() * 1000),
            )
            forgotten = await stream_housekeeping.forget_idle_consumers(
                redis,
                keys,
                idle_ms=int(config.consumer_gc_seconds * 1000),
                keep=config.consumer,
            )
        except REDIS_ERRORS as error:
            log.warning("housekeeping_failed", error=str(error))
            continue
        if trimmed or forgotten:
            log.info("stream_housekeeping", trimmed=trimmed, consumers_removed=forgotten)


PURGE_BATCH = 500  # runs per statement: each transaction stays short
PURGE_BATCHES = 20  # per round at most: one round never holds the database for long


async def purge_old_runs(
    pool: Pool, *, retention_days: int, interval: float, stop: asyncio.Event
) -> None:
    """Every `interval` seconds, purge what RUN_RETENTION_DAYS no longer keeps."""
    while not await sleep_unless(stop, interval):
        try:
            await purge_round(pool, retention_days=retention_days)
        except Exception as error:  # the next round tries again
            log.warning("run_purge_failed", error=f"{type(error).__name__}: {error}")


async def purge_round(
    pool: Pool, *, retention_days: int, batch: int = PURGE_BATCH, batches: int = PURGE_BATCHES
) -> control.Purged:
    """Purge finished runs older than `retention_days` in batches of `batch`, until none is
    left or `batches` were done (the rest waits for the next round); counted and logged."""
    runs = submissions = 0
    for _ in range(batches):
        async with translate_errors(), pool.acquire() as conn, conn.transaction():
            purged = await control.purge_finished(conn, older_than_days=retention_days, limit=batch)
        metrics.RUNS_PURGED.inc(purged.runs)
        runs, submissions = runs + purged.runs, submissions + purged.submissions
        if purged.runs < batch:
            break
    if runs:
        log.info("runs_purged", runs=runs, submissions=submissions, older_than_days=retention_days)
    return control.Purged(runs, submissions)
