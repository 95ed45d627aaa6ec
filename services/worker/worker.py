"""The consumer side of the stream: one reader, WORKER_CONCURRENCY handler tasks, a batching
acker, a reclaimer for other consumers' stalled entries, a heartbeat for our own long ones,
and an orderly shutdown.

    reader --(bounded queue)--> handlers --(ids)--> acker (XACK, pipelined)
    reclaimer (XAUTOCLAIM idle > CLAIM_IDLE_SECONDS) --^   \\--> dead letters past DELIVERY_LIMIT

One blocking XREADGROUP per process holds one connection; everything else shares a pool.
On start the reader first re-reads this consumer's own pending entries (its history, from `0`,
its cursor moving past what it got, so nothing it works on is handed back to it), then switches
to new ones (`>`). Entries are acknowledged only after the handler returned, that is after the
run's effects are recorded.

Redis may lose its data (a restart without persistence, a failover): the reclaimer notices a
new server run id, recreates the group from the stream's start if it is gone, and asks for the
reconcile sweep (`on_redis_reset`), which publishes again what no worker took
(redis_recovery.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from services.worker.acker import Acker
from services.worker.config import WorkerConfig, WorkerStats
from services.worker.dead_letters import DeadLetterHook, DeadLetters
from services.worker.housekeeping import keep_house
from services.worker.redis_recovery import RedisRecovery
from workflow_core import events, metrics
from workflow_core.adapters import dead_letter_stream, streams
from workflow_core.adapters.streams import REDIS_ERRORS, Entry, StreamKeys
from workflow_core.errors import Unavailable
from workflow_core.log import get_logger
from workflow_core.runtime.pacing import Backoff, settle, sleep_unless

log = get_logger(__name__)

_HANDLED = metrics.EVENTS_HANDLED.labels("handled")
_FAILED = metrics.EVENTS_HANDLED.labels("failed")
_DEAD_LETTERED = metrics.EVENTS_HANDLED.labels("dead_lettered")

Handler = Callable[[Entry], Awaitable[None]]


class Worker(RedisRecovery):
    def __init__(
        self,
        redis: aioredis.Redis,
        reader_redis: aioredis.Redis,
        keys: StreamKeys,
        handler: Handler,
        config: WorkerConfig,
        *,
        on_dead_letter: DeadLetterHook | None = None,
        database_probe: Callable[[], Awaitable[None]] | None = None,
        on_redis_reset: Callable[[], None] | None = None,
    ) -> None:
        self._redis, self._reader_redis, self._keys = redis, reader_redis, keys
        self._handler, self._config = handler, config
        self._dead = DeadLetters(
            redis,
            keys,
            consumer=config.consumer,
            delivery_limit=config.delivery_limit,
            max_length=config.dead_letter_max_length,
            on_dead_letter=on_dead_letter,
        )
        self._acker = Acker(redis, keys)
        self._on_redis_reset = on_redis_reset
        self._redis_run_id: str | None = None
        self._database_probe = database_probe
        self._queue: asyncio.Queue[Entry] = asyncio.Queue()
        # Entries held (queued or being handled) never exceed this: memory stays flat.
        self._capacity = asyncio.Semaphore(config.concurrency + config.batch_size)
        # Entries taken from the stream and not yet finished: the heartbeat keeps them ours.
        self._inflight: set[str] = set()
        self._database_up = asyncio.Event()
        self._database_up.set()
        self._probe: asyncio.Task[None] | None = None
        self._busy = 0
        self.stats = WorkerStats()

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Consume until `stop` is set (or, with `burst`, until the stream has nothing left for
        this group), then shut down in order: stop fetching, let handlers finish within the
        grace period, cancel what remains (those entries stay pending and are redelivered),
        flush acknowledgements."""
        await self._ensure_group()
        fetchers = [
            asyncio.create_task(self._read_loop(stop), name="reader"),
            asyncio.create_task(self._reclaim_loop(stop), name="reclaimer"),
            asyncio.create_task(self._heartbeat_loop(stop), name="heartbeat"),
            asyncio.create_task(
                keep_house(self._redis, self._keys, self._config, stop), name="housekeeping"
            ),
        ]
        handlers = [
            asyncio.create_task(self._handle_loop(), name=f"handler-{n}")
            for n in range(self._config.concurrency)
        ]
        acker = asyncio.create_task(self._acker.run(), name="acker")
        log.info(
            "worker_started",
            consumer=self._config.consumer,
            stream=self._keys.stream,
            group=self._keys.group,
            concurrency=self._config.concurrency,
        )
        try:
            if burst:
                await self._until_drained(stop)
            else:
                await stop.wait()
        finally:
            await self._shutdown(fetchers, handlers, acker)

    async def _until_drained(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.05)
            if self._queue.empty() and self._busy == 0 and self._acker.idle:
                pending = await self._redis.xpending(self._keys.stream, self._keys.group)
                info = await self._redis.xinfo_groups(self._keys.stream)
                lag = next((g.get("lag") for g in info if g["name"] == self._keys.group), 0)
                if not pending["pending"] and not lag and self._queue.empty() and self._busy == 0:
                    return

    async def _shutdown(
        self,
        fetchers: list[asyncio.Task[None]],
        handlers: list[asyncio.Task[None]],
        acker: asyncio.Task[None],
    ) -> None:
        started = time.monotonic()
        await settle(fetchers, cancel=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self._config.grace_seconds)
        unfinished = self._busy + self._queue.qsize()
        await settle(handlers, cancel=True)
        self._acker.stop()  # it acknowledges what is left, then returns
        await settle([acker], cancel=False)
        with contextlib.suppress(*REDIS_ERRORS):
            await self._acker.flush()
        log.info(
            "worker_stopped",
            consumer=self._config.consumer,
            handled=self.stats.handled,
            handed_back=unfinished,
            seconds=round(time.monotonic() - started, 3),
        )

    # -- fetching -----------------------------------------------------------------------------

    async def _take_capacity(self, at_least: int = 1) -> int:
        """Wait for room for `at_least` entries, then take as much more as is free, up to a
        batch."""
        for _ in range(at_least):
            await self._capacity.acquire()
        taken = at_least
        while taken < self._config.batch_size and not self._capacity.locked():
            await self._capacity.acquire()
            taken += 1
        return taken

    def _give_back(self, count: int) -> None:
        for _ in range(count):
            self._capacity.release()

    async def _read_loop(self, stop: asyncio.Event) -> None:
        # Our own pending entries first (`0`, then after the last one read), then new ones.
        history: str | None = "0"
        backoff = Backoff()
        while not stop.is_set():
            await self._database_up.wait()
            # Under load, read in batches of a quarter at least: the queue still holds the rest
            # of a batch for the handlers meanwhile, and each read is a round trip.
            room = await self._take_capacity(at_least=max(1, self._config.batch_size // 4))
            try:
                entries = await streams.read(
                    self._reader_redis,
                    self._keys,
                    self._config.consumer,
                    count=room,
                    block_ms=self._config.block_ms,
                    after=history,
                )
                history_read = history is not None and not entries
                if history is not None and entries:
                    history = entries[-1].id
                    entries = await self._with_delivery_counts(entries)
                backoff.reset()
            except ResponseError as error:
                self._give_back(room)
                if "NOGROUP" not in str(error):
                    raise
                await self._group_lost("the consumer group is gone")
                continue
            except REDIS_ERRORS as error:
                self._give_back(room)
                delay = backoff.next_delay()
                log.warning(
                    "redis_read_failed", error=f"{type(error).__name__}: {error}", retry_in=delay
                )
                await asyncio.sleep(delay)
                continue
            if history_read:
                history = None  # own history read: from now on, new entries only
            self._give_back(room - len(entries))
            for entry in entries:
                self._accept(entry)

    async def _with_delivery_counts(self, entries: list[Entry]) -> list[Entry]:
        """Entries of our own history with their delivery counts; one we are working on still
        (it came back after a reconnect) stays with its handler."""
        fresh = [entry for entry in entries if entry.id not in self._inflight]
        counts = await streams.delivery_counts(self._redis, self._keys, [e.id for e in fresh])
        return [Entry(e.id, e.fields, counts.get(e.id, 1)) for e in fresh]

    def _accept(self, entry: Entry) -> None:
        self._inflight.add(entry.id)
        self._queue.put_nowait(entry)

    async def _reclaim_loop(self, stop: asyncio.Event) -> None:
        backoff = Backoff(ceiling=self._config.claim_interval_seconds)
        while not stop.is_set():
            await self._database_up.wait()
            try:
                await self._reclaim_once()
                backoff.reset()
                delay = self._config.claim_interval_seconds
            except REDIS_ERRORS as error:
                delay = backoff.next_delay()
                log.warning("redis_reclaim_failed", error=str(error), retry_in=delay)
            await sleep_unless(stop, delay)

    async def _reclaim_once(self) -> None:
        await self._check_redis()
        room = await self._take_capacity()
        try:
            claimed, deleted = await streams.autoclaim(
                self._redis,
                self._keys,
                self._config.consumer,
                min_idle_ms=int(self._config.claim_idle_seconds * 1000),
                count=room,
            )
        except BaseException:
            self._give_back(room)
            raise
        self._give_back(room - len(claimed))
        if deleted:
            log.warning(
                "pending_entries_without_payload",
                ids=deleted,
                hint="trimmed or deleted while pending; acknowledged and skipped",
            )
            await streams.ack(self._redis, self._keys, deleted)
        for entry in claimed:
            self.stats.reclaimed += 1
            self._inflight.add(entry.id)
            if entry.fields is None:
                await self._dead_letter(entry, "its payload was deleted while pending")
            elif entry.deliveries > self._config.delivery_limit:
                await self._dead_letter(entry, None)
            else:
                log.info("entry_reclaimed", entry_id=entry.id, deliveries=entry.deliveries)
                self._queue.put_nowait(entry)

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        """Keep our own long-running entries from looking idle to other consumers' reclaimers
        (XCLAIM to ourselves with JUSTID resets the idle time without counting a delivery)."""
        interval = max(self._config.claim_idle_seconds / 3, 0.2)
        while not stop.is_set():
            await sleep_unless(stop, interval)
            ids: list[Any] = list(self._inflight)
            if ids:
                with contextlib.suppress(*REDIS_ERRORS):
                    await self._redis.xclaim(
                        self._keys.stream,
                        self._keys.group,
                        self._config.consumer,
                        0,
                        ids,
                        justid=True,
                    )

    # -- handling -----------------------------------------------------------------------------

    async def _handle_loop(self) -> None:
        while True:
            entry = await self._queue.get()
            self._busy += 1
            try:
                await self._database_up.wait()
                await self._handle(entry)
            finally:
                self._busy -= 1
                self._queue.task_done()

    async def _handle(self, entry: Entry) -> None:
        try:
            await self._handler(entry)
        except events.MalformedEvent as error:
            await self._dead_letter(entry, f"malformed event: {error}")
            return
        except Unavailable as error:
            # Not the event's fault: keep it (no ack, no delivery counted) until PostgreSQL is back.
            log.warning("database_unavailable", entry_id=entry.id, error=str(error))
            self._pause_for_database()
            self._queue.put_nowait(entry)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.stats.failed += 1
            _FAILED.inc()
            reason = f"{type(error).__name__}: {error}"
            log.exception("event_failed", entry_id=entry.id, deliveries=entry.deliveries)
            if entry.deliveries >= self._config.delivery_limit:
                await self._dead_letter(entry, reason)
            else:
                # Left pending: the reclaimer (of any worker) retries it after CLAIM_IDLE_SECONDS.
                with contextlib.suppress(*REDIS_ERRORS):
                    await dead_letter_stream.remember_error(
                        self._redis, self._keys, entry.id, reason
                    )
                self._release(entry)
            return
        self.stats.handled += 1
        _HANDLED.inc()
        self._acker.add(entry.id)
        self._release(entry)

    async def _dead_letter(self, entry: Entry, reason: str | None) -> None:
        before = self._dead.count
        await self._dead.move_safely(entry, reason)
        _DEAD_LETTERED.inc(self._dead.count - before)
        self.stats.dead_lettered = self._dead.count
        self._release(entry)

    def _release(self, entry: Entry) -> None:
        self._inflight.discard(entry.id)
        self._capacity.release()

    # -- database outages ---------------------------------------------------------------------

    def _pause_for_database(self) -> None:
        if self._database_up.is_set() and self._database_probe is not None:
            self._database_up.clear()
            self._probe = asyncio.create_task(self._wait_for_database(), name="database-probe")

    async def _wait_for_database(self) -> None:
        assert self._database_probe is not None
        backoff = Backoff(ceiling=2.0)
        while True:
            await asyncio.sleep(backoff.next_delay())
            try:
                await self._database_probe()
            except Exception:
                continue
            log.info("database_available_again")
            self._database_up.set()
            return
