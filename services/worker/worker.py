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
reconcile sweep (`on_redis_reset`), which publishes again what no worker took.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workflow_core import events
from workflow_core.adapters import streams
from workflow_core.adapters.streams import Entry, StreamKeys
from workflow_core.errors import Unavailable
from workflow_core.log import get_logger
from workflow_core.pacing import Backoff, sleep_unless
from workflow_core.settings import Settings

log = get_logger(__name__)

ACK_LINGER_SECONDS = 0.01
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    consumer: str
    concurrency: int = 32
    batch_size: int = 64
    block_ms: int = 2000
    claim_idle_seconds: float = 30.0
    claim_interval_seconds: float = 5.0
    delivery_limit: int = 5
    dead_letter_max_length: int = 10_000
    grace_seconds: float = 20.0
    housekeeping_interval_seconds: float = 60.0
    stream_retention_seconds: float = 3600.0
    consumer_gc_seconds: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        return cls(
            consumer=settings.consumer_name,
            concurrency=settings.worker_concurrency,
            batch_size=settings.worker_batch_size,
            block_ms=settings.worker_block_ms,
            claim_idle_seconds=settings.claim_idle_seconds,
            claim_interval_seconds=min(
                settings.claim_interval_seconds, settings.claim_idle_seconds
            ),
            delivery_limit=settings.delivery_limit,
            dead_letter_max_length=settings.dead_letter_max_length,
            grace_seconds=settings.worker_shutdown_grace_seconds,
            housekeeping_interval_seconds=settings.housekeeping_interval_seconds,
            stream_retention_seconds=settings.stream_retention_seconds,
            consumer_gc_seconds=settings.consumer_gc_seconds,
        )


@dataclass(slots=True)
class WorkerStats:
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0


Handler = Callable[[Entry], Awaitable[None]]
DeadLetterHook = Callable[[Entry, str], Awaitable[None]]


async def settle(tasks: list[asyncio.Task[None]], *, cancel: bool, timeout: float = 5.0) -> None:
    """Let tasks end (cancelling them first, or not), never waiting longer than `timeout`.
    On Python 3.11 a cancellation that meets a timeout inside a library can be lost, so a
    task is cancelled again rather than awaited forever."""
    if cancel:
        for task in tasks:
            task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=timeout) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=1.0)
        for task in stuck:
            log.warning("task_would_not_stop", task=task.get_name())


class Worker:
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
        self._on_dead_letter = on_dead_letter
        self._on_redis_reset = on_redis_reset
        self._redis_run_id: str | None = None
        self._database_probe = database_probe
        self._queue: asyncio.Queue[Entry] = asyncio.Queue()
        # Entries held (queued or being handled) never exceed this: memory stays flat.
        self._capacity = asyncio.Semaphore(config.concurrency + config.batch_size)
        # Entries taken from the stream and not yet finished: the heartbeat keeps them ours.
        self._inflight: set[str] = set()
        self._to_ack: list[str] = []
        self._ack_wanted = asyncio.Event()
        self._database_up = asyncio.Event()
        self._database_up.set()
        self._probe: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
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
            asyncio.create_task(self._housekeeping_loop(stop), name="housekeeping"),
        ]
        handlers = [
            asyncio.create_task(self._handle_loop(), name=f"handler-{n}")
            for n in range(self._config.concurrency)
        ]
        acker = asyncio.create_task(self._ack_loop(), name="acker")
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
            if self._queue.empty() and self._busy == 0 and not self._to_ack:
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
        self._stopping.set()
        await settle(fetchers, cancel=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self._config.grace_seconds)
        unfinished = self._busy + self._queue.qsize()
        await settle(handlers, cancel=True)
        self._ack_wanted.set()  # the acker flushes what is left, sees _stopping, and returns
        await settle([acker], cancel=False)
        with contextlib.suppress(*REDIS_ERRORS):
            await self._flush_acks()
        log.info(
            "worker_stopped",
            consumer=self._config.consumer,
            handled=self.stats.handled,
            handed_back=unfinished,
            seconds=round(time.monotonic() - started, 3),
        )

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
                await self._dead_letter_safely(entry, "its payload was deleted while pending")
            elif entry.deliveries > self._config.delivery_limit:
                await self._dead_letter_safely(entry, None)
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

    async def _housekeeping_loop(self, stop: asyncio.Event) -> None:
        """Trim acknowledged history older than STREAM_RETENTION_SECONDS (never an entry a group
        still needs) and forget consumers of workers that are gone (only with nothing pending)."""
        while not stop.is_set():
            await sleep_unless(stop, self._config.housekeeping_interval_seconds)
            if stop.is_set():
                return
            try:
                trimmed = await streams.trim(
                    self._redis,
                    self._keys,
                    keep_seconds=self._config.stream_retention_seconds,
                    now_ms=int(time.time() * 1000),
                )
                forgotten = await streams.forget_idle_consumers(
                    self._redis,
                    self._keys,
                    idle_ms=int(self._config.consumer_gc_seconds * 1000),
                    keep=self._config.consumer,
                )
            except REDIS_ERRORS as error:
                log.warning("housekeeping_failed", error=str(error))
                continue
            if trimmed or forgotten:
                log.info("stream_housekeeping", trimmed=trimmed, consumers_removed=forgotten)

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
            await self._dead_letter_safely(entry, f"malformed event: {error}")
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
            reason = f"{type(error).__name__}: {error}"
            log.exception("event_failed", entry_id=entry.id, deliveries=entry.deliveries)
            if entry.deliveries >= self._config.delivery_limit:
                await self._dead_letter_safely(entry, reason)
            else:
                # Left pending: the reclaimer (of any worker) retries it after CLAIM_IDLE_SECONDS.
                with contextlib.suppress(*REDIS_ERRORS):
                    await streams.remember_error(self._redis, self._keys, entry.id, reason)
                self._release(entry)
            return
        self.stats.handled += 1
        self._to_ack.append(entry.id)
        self._ack_wanted.set()
        self._release(entry)

    async def _dead_letter_safely(self, entry: Entry, reason: str | None) -> None:
        try:
            await self._dead_letter(entry, reason)
        except Exception as error:  # Redis or PostgreSQL away: the entry stays pending
            log.warning(
                "dead_letter_failed", entry_id=entry.id, error=f"{type(error).__name__}: {error}"
            )
        finally:
            self._release(entry)

    def _release(self, entry: Entry) -> None:
        self._inflight.discard(entry.id)
        self._capacity.release()

    async def _dead_letter(self, entry: Entry, reason: str | None) -> None:
        if reason is None:  # over the limit after crashes: the last error a handler recorded
            last = await self._redis.hget(self._keys.errors, entry.id)
            if isinstance(last, bytes):
                last = last.decode(errors="replace")
            cause = last or "no error recorded (did the worker holding it die?)"
            reason = (
                f"{cause}; delivered {entry.deliveries} times, limit {self._config.delivery_limit}"
            )
        error = reason
        # The run is failed first: if that cannot be recorded, the entry stays for a retry.
        if self._on_dead_letter is not None:
            await self._on_dead_letter(entry, error)
        dead_id = await streams.move_to_dead_letters(
            self._redis,
            self._keys,
            entry,
            error,
            self._config.consumer,
            max_length=self._config.dead_letter_max_length,
        )
        self.stats.dead_lettered += 1
        log.warning(
            "event_dead_lettered",
            entry_id=entry.id,
            dead_letter_id=dead_id,
            deliveries=entry.deliveries,
            error=error,
        )

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

    # -- acknowledging ------------------------------------------------------------------------

    async def _ack_loop(self) -> None:
        backoff = Backoff()
        while not (self._stopping.is_set() and not self._to_ack):
            await self._ack_wanted.wait()
            if not self._stopping.is_set():
                # A moment for more ids to join: one XACK for many. An entry acknowledged a
                # little later costs nothing; one lost with a crash is redelivered and skipped.
                await asyncio.sleep(ACK_LINGER_SECONDS)
            self._ack_wanted.clear()
            try:
                await self._flush_acks()
                backoff.reset()
            except REDIS_ERRORS as error:
                delay = backoff.next_delay()
                log.warning("redis_ack_failed", error=str(error), retry_in=delay)
                await asyncio.sleep(delay)
                self._ack_wanted.set()

    async def _flush_acks(self) -> None:
        ids, self._to_ack = self._to_ack, []
        try:
            await streams.ack(self._redis, self._keys, ids)
        except BaseException:
            self._to_ack[:0] = ids
            raise
