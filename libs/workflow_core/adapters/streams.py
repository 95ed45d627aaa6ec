"""Redis Streams: every key name Flowline uses, and the commands that feed and read the
main stream (the dead letters are in dead_letter_stream.py, trimming and the stream's state
in stream_housekeeping.py).

Keys, for a stream named S (REDIS_STREAM_NAME):
    S              the events (XADD by the relay, XREADGROUP by workers)
    S:dead         entries that failed DELIVERY_LIMIT times, with the error and the count
    S:errors       hash: entry id -> the last error a worker hit on it (for the dead letter)
    S:replays      hash: dead-letter id -> how many times it was replayed
    S:sent:<key>   an email's 250 noted while PostgreSQL could not record it (7 days)
    S:api-keys     pub/sub channel: ids of API keys just revoked (every API process listens)
    S:rate:<org>   hash: an organisation's token bucket for POST /submit (adapters/ratelimit.py;
                   expires once full again)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workflow_core.events import Event
from workflow_core.log import get_logger
from workflow_core.settings import Settings

log = get_logger(__name__)


REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)


"""What Redis being away (restarting, unreachable, slow) looks like: wait and try again."""


@dataclass(frozen=True, slots=True)
class StreamKeys:
    stream: str
    group: str

    @property
    def dead(self) -> str:
        return f"{self.stream}:dead"

    @property
    def errors(self) -> str:
        return f"{self.stream}:errors"

    @property
    def replays(self) -> str:
        return f"{self.stream}:replays"

    @property
    def key_revocations(self) -> str:
        return f"{self.stream}:api-keys"

    def sent(self, effect_key: str) -> str:
        return f"{self.stream}:sent:{effect_key}"

    def rate(self, org_id: str) -> str:
        return f"{self.stream}:rate:{org_id}"

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamKeys:
        return cls(settings.redis_stream_name, settings.redis_consumer_group)


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry as delivered to this consumer; `fields` is None when its payload was
    trimmed or deleted while it was pending."""

    id: str
    fields: dict[str, str] | None
    deliveries: int = 1


def client(
    settings: Settings, *, max_connections: int | None = None, socket_timeout: float | None = None
) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password or None,
        max_connections=max_connections or settings.redis_max_connections,
        timeout=settings.redis_socket_timeout_seconds,  # wait for a free connection at most this
        socket_timeout=socket_timeout or settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        decode_responses=True,
        health_check_interval=30,
    )
    return aioredis.Redis(connection_pool=pool)


SENT_NOTE_SECONDS = 7 * 24 * 3600


class SentNotes:
    """`effects.SentNotes` in Redis: a second place for the fact that an email was sent, for
    the moments PostgreSQL cannot take it."""

    def __init__(self, redis: aioredis.Redis, keys: StreamKeys) -> None:
        self._redis, self._keys = redis, keys

    async def note(self, key: str, result: Mapping[str, Any]) -> None:
        await self._redis.set(self._keys.sent(key), orjson.dumps(result), ex=SENT_NOTE_SECONDS)

    async def recall(self, key: str) -> dict[str, Any] | None:
        found = await self._redis.get(self._keys.sent(key))
        return None if found is None else dict(orjson.loads(found))


async def server_run_id(redis: aioredis.Redis) -> str | None:
    """Redis's run id: a new one means the server restarted (maybe without its data)."""
    info = await redis.info("server")
    run_id = info.get("run_id")
    return str(run_id) if run_id else None


async def group_exists(redis: aioredis.Redis, keys: StreamKeys) -> bool:
    try:
        groups = await redis.xinfo_groups(keys.stream)
    except ResponseError:  # no such stream
        return False
    return any(str(group["name"]) == keys.group for group in groups)


async def ensure_group(redis: aioredis.Redis, keys: StreamKeys) -> bool:
    """Create the consumer group (and the stream) if missing; True when created. Starts at the
    stream's beginning so that events published before any worker ran are delivered."""
    try:
        await redis.xgroup_create(keys.stream, keys.group, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" in str(error):
            return False
        raise
    log.info("consumer_group_created", stream=keys.stream, group=keys.group)
    return True


async def publish(redis: aioredis.Redis, keys: StreamKeys, events: Sequence[Event]) -> list[str]:
    """XADD every event in one round trip; returns their entry ids in order."""
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.xadd(keys.stream, event.to_fields())  # type: ignore[arg-type]
        return [str(entry_id) for entry_id in await pipe.execute()]


async def present(
    redis: aioredis.Redis, keys: StreamKeys, entry_ids: Sequence[str | None]
) -> set[str]:
    """Which of these entries the stream still holds (one pipelined round trip)."""
    wanted = [entry_id for entry_id in entry_ids if entry_id]
    if not wanted:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in wanted:
            pipe.xrange(keys.stream, min=entry_id, max=entry_id, count=1)
        found = await pipe.execute()
    return {entry_id for entry_id, entries in zip(wanted, found, strict=True) if entries}


def _entries(response: Any) -> list[Entry]:
    if not response:
        return []
    _, messages = response[0]
    return [Entry(str(entry_id), fields or None) for entry_id, fields in messages]


async def read(
    redis: aioredis.Redis,
    keys: StreamKeys,
    consumer: str,
    *,
    count: int,
    block_ms: int | None,
    after: str | None = None,
) -> list[Entry]:
    """XREADGROUP: new entries (`>`), or with `after` this consumer's own pending entries
    with a greater id (`0` for all of them), which an empty pending list answers with an
    empty list, never None. A reader of its history moves `after` on to the last id it got:
    reading from `0` again would hand back what it is still working on."""
    response = await redis.xreadgroup(
        keys.group,
        consumer,
        {keys.stream: ">" if after is None else after},
        count=count,
        block=block_ms if after is None else None,
    )
    return _entries(response)


async def delivery_counts(
    redis: aioredis.Redis, keys: StreamKeys, ids: Sequence[str]
) -> dict[str, int]:
    """How often each pending entry was delivered (XPENDING's counter), looked up one id at a
    time (a range would also count the entries between them), in one round trip."""
    if not ids:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xpending_range(keys.stream, keys.group, min=entry_id, max=entry_id, count=1)
        answers = await pipe.execute()
    return {str(rows[0]["message_id"]): int(rows[0]["times_delivered"]) for rows in answers if rows}


async def autoclaim(
    redis: aioredis.Redis, keys: StreamKeys, consumer: str, *, min_idle_ms: int, count: int
) -> tuple[list[Entry], list[str]]:
    """Claim every entry idle longer than `min_idle_ms` (looping on XAUTOCLAIM's cursor, which
    may stop short of COUNT while more remain). Returns the claimed entries with their delivery
    counts, and the ids whose payload was deleted (already removed from the pending list)."""
    claimed: list[Entry] = []
    deleted: list[str] = []
    cursor = "0-0"
    while len(claimed) < count:
        response = await redis.xautoclaim(
            keys.stream,
            keys.group,
            consumer,
            min_idle_ms,
            start_id=cursor,
            count=count - len(claimed),
        )
        cursor = str(response[0])
        claimed.extend(Entry(str(entry_id), fields or None) for entry_id, fields in response[1])
        if len(response) > 2:
            deleted.extend(str(entry_id) for entry_id in response[2])
        if cursor == "0-0":
            break
    counts = await delivery_counts(redis, keys, [entry.id for entry in claimed])
    return [Entry(e.id, e.fields, counts.get(e.id, 1)) for e in claimed], deleted


async def ack(redis: aioredis.Redis, keys: StreamKeys, ids: Iterable[str]) -> None:
    ids = list(ids)
    if ids:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xack(keys.stream, keys.group, *ids)
            pipe.hdel(keys.errors, *ids)
            await pipe.execute()
