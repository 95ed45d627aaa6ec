"""Acknowledgements, gathered: handlers hand in the ids of entries whose work is recorded, and
one pipelined XACK goes for all that came within a moment of each other."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from workflow_core.adapters import streams
from workflow_core.adapters.streams import REDIS_ERRORS, StreamKeys
from workflow_core.log import get_logger
from workflow_core.runtime.pacing import Backoff

log = get_logger(__name__)

LINGER_SECONDS = 0.01


class Acker:
    def __init__(self, redis: aioredis.Redis, keys: StreamKeys) -> None:
        self._redis, self._keys = redis, keys
        self._ids: list[str] = []
        self._wanted = asyncio.Event()
        self._stopping = False

    @property
    def idle(self) -> bool:
        return not self._ids

    def add(self, entry_id: str) -> None:
        self._ids.append(entry_id)
        self._wanted.set()

    async def run(self) -> None:
        """Until `stop()`, and then until what was handed in is acknowledged."""
        backoff = Backoff()
        while not (self._stopping and not self._ids):
            await self._wanted.wait()
            if not self._stopping:
                # A moment for more ids to join: one XACK for many. An entry acknowledged a
                # little later costs nothing; one lost with a crash is redelivered and skipped.
                await asyncio.sleep(LINGER_SECONDS)
            self._wanted.clear()
            try:
                await self.flush()
                backoff.reset()
            except REDIS_ERRORS as error:
                delay = backoff.next_delay()
                log.warning("redis_ack_failed", error=str(error), retry_in=delay)
                await asyncio.sleep(delay)
                self._wanted.set()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()

    async def flush(self) -> None:
        ids, self._ids = self._ids, []
        try:
            await streams.ack(self._redis, self._keys, ids)
        except BaseException:
            self._ids[:0] = ids
            raise
