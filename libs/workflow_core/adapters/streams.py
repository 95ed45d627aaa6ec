"""Redis Streams: every key name Flowline uses, and the stream commands it runs.

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

import contextlib
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


@dataclass(frozen=True, slots=True)
class GroupState:
    name: str
    pending: int
    lag: int | None  # None when Redis cannot tell (entries were deleted in the gap)


@dataclass(frozen=True, slots=True)
class StreamState:
    length: int
    dead_letters: int
    groups: tuple[GroupState, ...]


async def stream_state(redis: aioredis.Redis, keys: StreamKeys) -> StreamState:
    """The stream's length, its dead letters, and each consumer group's backlog, in one round
    trip (a missing stream has no groups)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(keys.stream)
        pipe.xlen(keys.dead)
        pipe.xinfo_groups(keys.stream)
        length, dead, groups = await pipe.execute(raise_on_error=False)
    for answer in (length, dead):
        if isinstance(answer, Exception):
            raise answer
    if isinstance(groups, ResponseError):  # no such stream (yet)
        groups = []
    elif isinstance(groups, Exception):
        raise groups
    return StreamState(
        int(length),
        int(dead),
        tuple(
            GroupState(
                _text(group["name"]),
                int(group.get("pending") or 0),
                None if group.get("lag") is None else int(group["lag"]),
            )
            for group in groups
        ),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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


async def move_to_dead_letters(
    redis: aioredis.Redis,
    keys: StreamKeys,
    entry: Entry,
    error: str | None,
    consumer: str,
    *,
    max_length: int = 10_000,
) -> str:
    """Copy the entry to the dead-letter stream with its error and delivery count, then
    acknowledge it on the main stream, in that order (a crash between repeats the copy, never
    loses the entry). The dead-letter stream keeps about `max_length` entries, the newest."""
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
    dead_id = await redis.xadd(
        keys.dead,
        fields,  # type: ignore[arg-type]
        maxlen=max_length,
        approximate=True,
    )
    await ack(redis, keys, [entry.id])
    return str(dead_id)


def _id_from_millis(millis: int) -> str:
    return f"{max(millis, 0)}-0"


async def safe_trim_id(redis: aioredis.Redis, keys: StreamKeys) -> str | None:
    """The lowest entry id no consumer group still needs: below the oldest pending entry and
    the last delivered one of every group. None when there is no group (trim nothing)."""
    try:
        groups = await redis.xinfo_groups(keys.stream)
    except ResponseError:  # no such stream
        return None
    if not groups:
        return None
    floor: tuple[int, int] | None = None
    for group in groups:
        candidates = [str(group["last-delivered-id"])]
        if int(group.get("pending") or 0):
            summary = await redis.xpending(keys.stream, str(group["name"]))
            if summary.get("min"):
                candidates.append(str(summary["min"]))
        lowest = min(_id_key(candidate) for candidate in candidates)
        floor = lowest if floor is None else min(floor, lowest)
    assert floor is not None
    return f"{floor[0]}-{floor[1]}"


async def trim(
    redis: aioredis.Redis,
    keys: StreamKeys,
    *,
    keep_seconds: float,
    now_ms: int,
    approximate: bool = True,
) -> int:
    """Drop acknowledged entries older than `keep_seconds` (XTRIM MINID ~: whole blocks only,
    which is cheap), never one that a group has pending or has not delivered yet; returns how
    many went."""
    safe = await safe_trim_id(redis, keys)
    if safe is None:
        return 0
    minid = min(_id_key(safe), _id_key(_id_from_millis(now_ms - int(keep_seconds * 1000))))
    return int(
        await redis.xtrim(keys.stream, minid=f"{minid[0]}-{minid[1]}", approximate=approximate)
    )


async def forget_idle_consumers(
    redis: aioredis.Redis, keys: StreamKeys, *, idle_ms: int, keep: str
) -> list[str]:
    """Remove consumers that hold nothing and have not been heard of for `idle_ms` (dead
    workers). A consumer with pending entries is never removed: XGROUP DELCONSUMER would make
    them unclaimable."""
    removed: list[str] = []
    try:
        consumers = await redis.xinfo_consumers(keys.stream, keys.group)
    except ResponseError:
        return removed
    for consumer in consumers:
        name = str(consumer["name"])
        if name != keep and not int(consumer["pending"]) and int(consumer["idle"]) > idle_ms:
            # Deleting returns the pending count it dropped: 0 unless it read in between.
            dropped = await redis.xgroup_delconsumer(keys.stream, keys.group, name)
            if dropped:
                log.error("consumer_removed_with_pending", consumer=name, pending=dropped)
            removed.append(name)
    return removed


def dead_letter_view(entry_id: str, fields: dict[str, str], replays: int) -> dict[str, Any]:
    """A dead-letter entry as the API shows it."""
    event: Any = fields.get("payload")
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
        event = orjson.loads(event)  # malformed payloads are shown as the text they were
    return {
        "id": entry_id,
        "dead_at_ms": int(entry_id.split("-", 1)[0]),
        "original_id": fields.get("original_id"),
        "deliveries": int(fields.get("deliveries", "0") or 0),
        "error": fields.get("error"),
        "consumer": fields.get("consumer"),
        "type": fields.get("type"),
        "event_id": fields.get("event_id"),
        "event": event,
        "replays": replays,
    }


async def dead_letters(
    redis: aioredis.Redis, keys: StreamKeys, *, count: int, before: str | None = None
) -> list[dict[str, Any]]:
    """Dead letters, newest first; `before` pages on (an id from the previous page)."""
    entries: list[Any] = list(
        await redis.xrevrange(keys.dead, max=f"({before}" if before else "+", min="-", count=count)
        or []
    )
    ids: list[Any] = [entry_id for entry_id, _ in entries]
    counts: list[Any] = list(await redis.hmget(keys.replays, ids)) if ids else []
    return [
        dead_letter_view(str(entry_id), fields, int(n or 0))
        for (entry_id, fields), n in zip(entries, counts, strict=True)
    ]


async def read_dead_letter(
    redis: aioredis.Redis, keys: StreamKeys, entry_id: str
) -> dict[str, Any] | None:
    """One dead letter: its raw `fields` and its API `view`; None when there is none."""
    entries: list[Any] = list(
        await redis.xrange(keys.dead, min=entry_id, max=entry_id, count=1) or []
    )
    if not entries:
        return None
    replays = await redis.hget(keys.replays, entry_id)
    fields = dict(entries[0][1])
    return {"fields": fields, "view": dead_letter_view(entry_id, fields, int(replays or 0))}


async def count_replay(redis: aioredis.Redis, keys: StreamKeys, entry_id: str) -> int:
    """Count one more replay of a dead letter (atomically); returns the new count."""
    return int(await redis.hincrby(keys.replays, entry_id, 1))


async def uncount_replay(redis: aioredis.Redis, keys: StreamKeys, entry_id: str) -> None:
    await redis.hincrby(keys.replays, entry_id, -1)


def original_fields(fields: dict[str, str]) -> dict[str, str]:
    """The fields of the entry as it was on the main stream."""
    return {
        name: value for name, value in fields.items() if name in {"type", "event_id", "payload"}
    }
