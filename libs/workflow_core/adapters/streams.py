"""Redis Streams: every key name Flowline uses, and the stream commands it runs.

Keys, for a stream named S (REDIS_STREAM_NAME):
    S              the events (XADD by the relay, XREADGROUP by workers)
    S:dead         entries that failed DELIVERY_LIMIT times, with the error and the count
    S:errors       hash: entry id -> the last error a worker hit on it (for the dead letter)
    S:replays      hash: dead-letter id -> how many times it was replayed
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from workflow_core.events import Event
from workflow_core.log import get_logger
from workflow_core.settings import Settings

log = get_logger(__name__)


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
    history: bool = False,
) -> list[Entry]:
    """XREADGROUP: new entries (`>`), or with `history` this consumer's own pending ones
    (`0`), which an empty pending list answers with an empty list, never None."""
    response = await redis.xreadgroup(
        keys.group,
        consumer,
        {keys.stream: "0" if history else ">"},
        count=count,
        block=None if history else block_ms,
    )
    return _entries(response)


async def delivery_counts(
    redis: aioredis.Redis, keys: StreamKeys, ids: Sequence[str]
) -> dict[str, int]:
    """How often each pending entry was delivered (XPENDING's counter)."""
    if not ids:
        return {}
    ordered = sorted(ids, key=_id_key)
    rows = await redis.xpending_range(
        keys.stream, keys.group, min=ordered[0], max=ordered[-1], count=max(len(ids), 1) * 4
    )
    wanted = set(ids)
    return {
        str(row["message_id"]): int(row["times_delivered"])
        for row in rows
        if str(row["message_id"]) in wanted
    }


def _id_key(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


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


async def remember_error(
    redis: aioredis.Redis, keys: StreamKeys, entry_id: str, error: str
) -> None:
    await redis.hset(keys.errors, entry_id, error[:2000])


async def dead_letter(
    redis: aioredis.Redis, keys: StreamKeys, entry: Entry, error: str | None, consumer: str
) -> str:
    """Copy the entry to the dead-letter stream with its error and delivery count, then
    acknowledge it on the main stream, in that order (a crash between repeats the copy, never
    loses the entry)."""
    last_error = error or await redis.hget(keys.errors, entry.id) or "unknown error"
    fields = {
        "original_id": entry.id,
        "deliveries": str(entry.deliveries),
        "error": last_error,
        "consumer": consumer,
        **{
            f"original_{name}" if name in {"error", "deliveries"} else name: value
            for name, value in (entry.fields or {}).items()
        },
    }
    dead_id = await redis.xadd(keys.dead, fields)  # type: ignore[arg-type]
    await ack(redis, keys, [entry.id])
    return str(dead_id)
