"""The outbox relay: publishes outbox rows to the stream and marks them published.

Runs in every API and worker process. Woken by NOTIFY on `flowline_outbox` (a trigger on the
outbox), with a slow poll as a backstop; rows are taken `FOR UPDATE SKIP LOCKED`, so relays in
several processes share the work. Publishing is at-least-once (a crash after XADD and before
the commit publishes again); consumers deduplicate by event id.
"""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

from workflow_core.adapters import streams
from workflow_core.events import Event
from workflow_core.log import get_logger
from workflow_core.persistence import outbox
from workflow_core.persistence.db import translate_errors
from workflow_core.persistence.listen import Listener
from workflow_core.persistence.pg import Pool

log = get_logger(__name__)


class OutboxRelay:
    def __init__(
        self,
        pool: Pool,
        redis: aioredis.Redis,
        keys: streams.StreamKeys,
        *,
        dsn: str,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
    ) -> None:
        self._pool, self._redis, self._keys = pool, redis, keys
        self._batch_size, self._poll_seconds = batch_size, poll_seconds
        self._listener = Listener(dsn, outbox.CHANNEL)
        self.published = 0

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many events went out."""
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            rows = await outbox.claim_unpublished(conn, self._batch_size)
            if not rows:
                return 0
            events = [Event(event_id, kind, payload) for _, event_id, kind, payload in rows]
            entry_ids = await streams.publish(self._redis, self._keys, events)
            await outbox.mark_published(
                conn, [(row[0], entry) for row, entry in zip(rows, entry_ids, strict=True)]
            )
        self.published += len(rows)
        return len(rows)

    async def drain(self, timeout: float) -> None:
        """Publish what is pending, for at most `timeout` seconds (used at shutdown)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                while await self.publish_batch() == self._batch_size:
                    pass

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        async with self._listener:
            while not stop.is_set():
                try:
                    count = await self.publish_batch()
                except Exception as error:  # Redis or PostgreSQL away: keep the rows, try later
                    failures += 1
                    delay = min(0.1 * 2**failures, 5.0)
                    if failures in (1, 10) or failures % 50 == 0:
                        log.warning(
                            "outbox_relay_failed",
                            error=f"{type(error).__name__}: {error}",
                            failures=failures,
                            retry_in=delay,
                        )
                    await _sleep_unless(stop, delay)
                    continue
                if failures:
                    log.info("outbox_relay_recovered", after_failures=failures)
                    failures = 0
                if count < self._batch_size:
                    await self._listener.wait(self._poll_seconds, stop)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
