"""Looking after the stream rather than reading it: its length, dead letters and each group's
backlog (for the metrics), trimming acknowledged entries no group still needs, and
forgetting the consumers of workers that died. Apart from streams.py so that what runs on
a timer, away from the hot path, reads on its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from workflow_core.adapters.streams import StreamKeys
from workflow_core.log import get_logger

log = get_logger(__name__)


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


def _id_key(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


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
