"""Stream housekeeping, in every worker every HOUSEKEEPING_INTERVAL_SECONDS: trim acknowledged
history older than STREAM_RETENTION_SECONDS (never an entry a group still needs) and forget
consumers of workers that are gone (only those with nothing pending)."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from services.worker.config import WorkerConfig
from workflow_core.adapters import streams
from workflow_core.adapters.streams import REDIS_ERRORS, StreamKeys
from workflow_core.log import get_logger
from workflow_core.runtime.pacing import sleep_unless

log = get_logger(__name__)


async def keep_house(
    redis: aioredis.Redis, keys: StreamKeys, config: WorkerConfig, stop: asyncio.Event
) -> None:
    while not await sleep_unless(stop, config.housekeeping_interval_seconds):
        try:
            trimmed = await streams.trim(
                redis,
                keys,
                keep_seconds=config.stream_retention_seconds,
                now_ms=int(time.time() * 1000),
            )
            forgotten = await streams.forget_idle_consumers(
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
