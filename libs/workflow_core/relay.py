"""Getting outbox rows onto the stream.

Submissions take the fast path: right after their transaction commits, the API publishes
them (`FastPublisher`, coalescing concurrent ones into one pipelined XADD and one UPDATE).
The relay is the backstop that makes the outbox a guarantee: it publishes whatever is still
unpublished, taking rows `FOR UPDATE SKIP LOCKED` so relays in several processes share the
work. It leaves a submission's event alone for `grace_seconds` (the fast path's turn) and
publishes other events (task completions, timers, replays) at once, woken by NOTIFY from a
trigger on the outbox, with a poll as a backstop.

Publishing is at-least-once (a crash after XADD and before the row is marked publishes again);
consumers deduplicate by event id. Events a worker took longer ago than OUTBOX_RETENTION_SECONDS
(7 days by default) are deleted, so the outbox does not grow with every submission ever made.

PostgreSQL is the truth, Redis carries the work: a worker marks an event taken in the
transaction that starts its runs. The reconcile sweep (one relay at a time, under an advisory
lock) publishes again every event published more than EVENT_RECONCILE_SECONDS ago that no
worker took, so Redis losing its data (a restart without persistence, a failover) loses no
submission; and it wakes the runs that a worker which died left running (their events may be
gone from Redis with it), and the concurrency and throttle queues nothing moved for as long.
A worker that sees Redis come back empty asks for a sweep at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import redis.asyncio as aioredis

from workflow_core import events
from workflow_core.adapters import streams
from workflow_core.events import Event
from workflow_core.ids import new_id
from workflow_core.log import get_logger
from workflow_core.persistence import gates, outbox, runs
from workflow_core.persistence.listen import Channel, Listener
from workflow_core.persistence.pool import Connection, Pool, translate_errors
from workflow_core.runtime.coalesce import Coalescer
from workflow_core.runtime.pacing import Backoff, sleep_unless
from workflow_core.settings import Settings

log = get_logger(__name__)

PRUNE_EVERY_SECONDS = 600.0
PRUNE_BATCH = 5000
# Any constant will do: one sweep at a time across every process on this database.
RECONCILE_LOCK = 0x466C6F77_5357  # "FlowSW"


class OutboxRelay:
    def __init__(
        self,
        pool: Pool,
        redis: aioredis.Redis,
        keys: streams.StreamKeys,
        announced: Channel,
        *,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        grace_seconds: float = 2.0,
        retention_seconds: float = 0.0,
        reconcile_seconds: float = 60.0,
        dead_after_seconds: float = 30.0,
    ) -> None:
        self._pool, self._redis, self._keys = pool, redis, keys
        self._batch_size, self._poll_seconds = batch_size, poll_seconds
        self._grace_seconds = grace_seconds
        self._retention_seconds = retention_seconds
        self._reconcile_seconds, self._dead_after = reconcile_seconds, dead_after_seconds
        self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
        self._next_reconcile = time.monotonic() + reconcile_seconds / 4
        self._reconcile_all = False
        self._announced = announced
        self.published = 0
        self.republished = 0

    @classmethod
    def from_settings(
        cls, pool: Pool, redis: aioredis.Redis, listener: Listener, settings: Settings
    ) -> OutboxRelay:
        return cls(
            pool,
            redis,
            streams.StreamKeys.from_settings(settings),
            listener.channel(outbox.CHANNEL),
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            grace_seconds=settings.outbox_grace_seconds,
            retention_seconds=settings.outbox_retention_seconds,
            reconcile_seconds=settings.event_reconcile_seconds,
            dead_after_seconds=settings.worker_dead_after_seconds,
        )

    async def publish_batch(self, *, everything: bool = False) -> int:
        """Publish up to one batch; returns how many events went out. `everything` includes
        submissions still within the fast path's grace period."""
        grace = 0.0 if everything else self._grace_seconds
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            rows = await outbox.claim_unpublished(conn, self._batch_size, grace)
            if not rows:
                return 0
            await self._publish(conn, rows)
        self.published += len(rows)
        return len(rows)

    async def _publish(self, conn: Connection, rows: list[tuple[int, Any, str, Any]]) -> None:
        """XADD the claimed outbox rows and mark them published, inside the claim's
        transaction (a failed XADD leaves them unpublished)."""
        batch = [Event(event_id, kind, payload) for _, event_id, kind, payload in rows]
        entry_ids = await streams.publish(self._redis, self._keys, batch)
        await outbox.mark_published(
            conn, [(row[0], entry) for row, entry in zip(rows, entry_ids, strict=True)]
        )

    async def reconcile(self, *, everything: bool = False) -> int:
        """The sweep: publish again the events published more than EVENT_RECONCILE_SECONDS ago
        (`everything`: at any time before now) that no worker took, and queue a `recover` wake-up
        for each run left running by a dead worker. Returns how many events went out; 0 when
        another process holds the sweep."""
        age = 0.0 if everything else self._reconcile_seconds
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RECONCILE_LOCK):
                return 0
            stranded = await runs.orphans(
                conn,
                quiet_for=self._reconcile_seconds,
                dead_after=self._dead_after,
                limit=self._batch_size,
            )
            if stranded:
                await outbox.add_events(
                    conn, [events.run_resume(new_id(), run_id, "recover") for run_id in stranded]
                )
                log.warning("orphaned_runs_recovered", runs=[str(r) for r in stranded])
            await self._wake_stuck_queues(conn)
            candidates = await outbox.claim_untaken(conn, self._batch_size, age)
            # An entry still in the stream waits its turn (behind a backlog, or pending for a
            # claim): publishing it again would only lengthen the backlog, every sweep.
            there = await streams.present(self._redis, self._keys, [c[4] for c in candidates])
            rows = [c[:4] for c in candidates if c[4] not in there]
            if not rows:
                return 0
            await self._publish(conn, rows)
        self.republished += len(rows)
        log.warning(
            "events_republished",
            events=len(rows),
            hint="published, taken by no worker and gone from the stream: Redis lost them",
        )
        return len(rows)

    async def _wake_stuck_queues(self, conn: Connection) -> None:
        """Queue an `admit` wake-up for the first run of each concurrency or throttle queue
        that nothing moved for EVENT_RECONCILE_SECONDS (its wake-up may have died with a
        worker); a queue that is merely full is looked at and left as it is."""
        heads = await gates.stuck_queues(
            conn, quiet_for=self._reconcile_seconds, limit=self._batch_size
        )
        if heads:
            await gates.wake(conn, heads)
            log.info("queued_runs_woken", runs=len(heads))

    def reconcile_soon(self) -> None:
        """Sweep at once, everything published until now (Redis came back without its data)."""
        self._reconcile_all = True
        self._next_reconcile = 0.0

    async def _reconcile_when_due(self) -> None:
        if time.monotonic() >= self._next_reconcile:
            everything, self._reconcile_all = self._reconcile_all, False
            self._next_reconcile = time.monotonic() + self._reconcile_seconds / 4
            try:
                await self.reconcile(everything=everything)
            except BaseException:
                self._reconcile_all = self._reconcile_all or everything
                raise

    async def prune(self) -> int:
        """Delete the events published longer ago than the retention (none when it is 0);
        how many went. Batched, so that no statement holds many locks or runs long."""
        if self._retention_seconds <= 0:
            return 0
        pruned = 0
        while True:
            async with translate_errors(), self._pool.acquire() as conn:
                deleted = await outbox.prune_published(conn, self._retention_seconds, PRUNE_BATCH)
            pruned += deleted
            if deleted < PRUNE_BATCH:
                break
        if pruned:
            log.info("outbox_pruned", events=pruned, older_than_seconds=self._retention_seconds)
        return pruned

    async def _prune_when_due(self) -> None:
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
            await self.prune()

    async def drain(self, timeout: float) -> None:
        """Publish what is pending, for at most `timeout` seconds (used at shutdown)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                while await self.publish_batch(everything=True) == self._batch_size:
                    pass

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            try:
                count = await self.publish_batch()
                await self._reconcile_when_due()
                await self._prune_when_due()
            except Exception as error:  # Redis or PostgreSQL away: keep the rows, try later
                delay = backoff.next_delay()
                failures = backoff.failures
                if failures in (1, 10) or failures % 50 == 0:
                    log.warning(
                        "outbox_relay_failed",
                        error=f"{type(error).__name__}: {error}",
                        failures=failures,
                        retry_in=delay,
                    )
                await sleep_unless(stop, delay)
                continue
            if backoff.failures:
                log.info("outbox_relay_recovered", after_failures=backoff.failures)
                backoff.reset()
            if count < self._batch_size:
                until_sweep = max(self._next_reconcile - time.monotonic(), 0.0)
                await self._announced.wait(min(self._poll_seconds, until_sweep), stop)


class FastPublisher:
    """Publishes events as soon as their transaction committed, without waiting for the relay.
    Best effort: if Redis is away or the process stops first, the relay publishes them once
    their grace period is over. Concurrent calls share one XADD pipeline and one UPDATE."""

    def __init__(self, pool: Pool, redis: aioredis.Redis, keys: streams.StreamKeys) -> None:
        self._pool, self._redis, self._keys = pool, redis, keys
        self._publish: Coalescer[Event, None] = Coalescer(
            self._publish_many, self._publish_one, max_in_flight=1
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = 0
        self._resting_until = 0.0

    def soon(self, event: Event) -> None:
        """Publish `event` in the background (the caller does not wait for Redis). After a
        failure the fast path rests a few seconds: while Redis is away, the relay alone
        catches up, instead of every request trying again."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._resting_until:
            return
        task = loop.create_task(self._publish_quietly(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_quietly(self, event: Event) -> None:
        try:
            await self._publish(event)
        except Exception as error:  # the relay will do it
            self._failures += 1
            self._resting_until = asyncio.get_running_loop().time() + 2.0
            if self._failures in (1, 100) or self._failures % 1000 == 0:
                log.warning(
                    "fast_publish_failed",
                    error=f"{type(error).__name__}: {error}",
                    failures=self._failures,
                    fallback="the outbox relay",
                )

    async def _publish_many(self, batch: list[Event]) -> list[None]:
        entry_ids = await streams.publish(self._redis, self._keys, batch)
        async with translate_errors():
            await outbox.mark_published_events(
                self._pool, [(e.event_id, entry) for e, entry in zip(batch, entry_ids, strict=True)]
            )
        return [None] * len(batch)

    async def _publish_one(self, event: Event) -> None:
        await self._publish_many([event])

    async def close(self) -> None:
        """Let what is being published finish (briefly)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
