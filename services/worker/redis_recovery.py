"""Redis losing its data (a restart without persistence, a failover, someone deleting the
stream): the consumer group is created when missing, a new server run id is noticed, and the
group is recreated from the stream's start and the reconcile sweep asked for
(`on_redis_reset`), which publishes again what no worker took. Apart from worker.py, whose
reader and reclaimer call it, because it is about Redis's state, not about entries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis

from workflow_core.adapters import streams
from workflow_core.adapters.streams import REDIS_ERRORS, StreamKeys
from workflow_core.log import get_logger
from workflow_core.runtime.pacing import Backoff

log = get_logger(__name__)


class RedisRecovery:
    """Part of `Worker` (worker.py): it uses the worker's Redis, stream keys, the server run id
    it saw last and its `on_redis_reset` hook."""

    _redis: aioredis.Redis
    _keys: StreamKeys
    _redis_run_id: str | None
    _on_redis_reset: Callable[[], None] | None

    async def _ensure_group(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await streams.ensure_group(self._redis, self._keys)
                if self._redis_run_id is None:
                    self._redis_run_id = await streams.server_run_id(self._redis)
                return
            except REDIS_ERRORS as error:
                delay = backoff.next_delay()
                log.warning("redis_unavailable", error=str(error), retry_in=delay)
                await asyncio.sleep(delay)

    async def _group_lost(self, why: str) -> None:
        """The stream or its group is gone (Redis lost its data, or someone deleted them):
        recreate the group from the stream's start, and have the outbox swept for what was
        published and never taken."""
        log.warning(
            "redis_lost_its_data",
            stream=self._keys.stream,
            why=why,
            action="recreating the consumer group from the stream's start; the outbox "
            "publishes again every event no worker took",
        )
        await self._ensure_group()
        if self._on_redis_reset is not None:
            self._on_redis_reset()

    async def _check_redis(self) -> None:
        """A new run id means Redis restarted: whether it kept its data shows in the group."""
        run_id = await streams.server_run_id(self._redis)
        if run_id is None or run_id == self._redis_run_id:
            return
        previous, self._redis_run_id = self._redis_run_id, run_id
        if previous is None:
            return
        if await streams.group_exists(self._redis, self._keys):
            log.warning("redis_restarted", stream=self._keys.stream, kept_its_data=True)
            if self._on_redis_reset is not None:
                self._on_redis_reset()  # an append-only file may still miss the last second
        else:
            await self._group_lost("Redis restarted without it")
