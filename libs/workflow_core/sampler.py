"""The gauges of what every process shares (the outbox, the stream, the runs table), read every
METRICS_SAMPLE_SECONDS by each API and worker process, off the request and event paths: one
PostgreSQL statement pair and one pipelined Redis round trip per sample, whatever the scrape
rate. Whether each answered is `flowline_dependency_up{dependency="postgresql"|"redis"}`."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from workflow_core import metrics
from workflow_core.adapters import stream_housekeeping
from workflow_core.adapters.streams import StreamKeys
from workflow_core.log import get_logger
from workflow_core.persistence import outbox, runs
from workflow_core.persistence.pool import Pool, translate_errors
from workflow_core.runtime.pacing import Every, sleep_unless

log = get_logger(__name__)

# A sample that takes longer than this is given up (the dependency counts as down).
SAMPLE_TIMEOUT_SECONDS = 5.0


class Sampler:
    def __init__(self, pool: Pool, redis: aioredis.Redis, keys: StreamKeys) -> None:
        self._pool, self._redis, self._keys = pool, redis, keys
        self._database_failed = Every(60.0)
        self._redis_failed = Every(60.0)

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        while True:
            await self.sample()
            if await sleep_unless(stop, interval):
                return

    async def sample(self) -> None:
        database, redis = await asyncio.gather(self._sample_database(), self._sample_redis())
        if database and redis:
            metrics.SAMPLE_AGE.set(time.time())

    async def _sample_database(self) -> bool:
        try:
            async with (
                asyncio.timeout(SAMPLE_TIMEOUT_SECONDS),
                translate_errors(),
                self._pool.acquire() as conn,
            ):
                unpublished = await outbox.count_unpublished(conn)
                by_status = await runs.count_by_status(conn)
        except Exception as error:
            metrics.dependency("postgresql", False)
            if self._database_failed.ready():
                log.warning("metrics_sample_failed", dependency="postgresql", error=_say(error))
            return False
        metrics.dependency("postgresql", True)
        metrics.OUTBOX_UNPUBLISHED.set(unpublished)
        for status, count in by_status.items():
            metrics.RUNS.labels(status).set(count)
        return True

    async def _sample_redis(self) -> bool:
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_SECONDS):
                state = await stream_housekeeping.stream_state(self._redis, self._keys)
        except Exception as error:  # REDIS_ERRORS, or a reply it cannot read
            metrics.dependency("redis", False)
            if self._redis_failed.ready():
                log.warning("metrics_sample_failed", dependency="redis", error=_say(error))
            return False
        metrics.dependency("redis", True)
        metrics.STREAM_LENGTH.set(state.length)
        metrics.DEAD_LETTERS.set(state.dead_letters)
        for group in state.groups:
            metrics.STREAM_PENDING.labels(group.name).set(group.pending)
            if group.lag is not None:
                metrics.STREAM_LAG.labels(group.name).set(group.lag)
        return True


def _say(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip().rstrip(":")
