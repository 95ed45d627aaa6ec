"""Stream housekeeping on real Redis: trimming keeps every entry a group still needs, and only
consumers that hold nothing are forgotten."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from workflow_core.adapters import stream_housekeeping
from workflow_core.adapters.streams import StreamKeys


async def _fill(redis: aioredis.Redis, keys: StreamKeys, count: int) -> list[str]:
    return [str(await redis.xadd(keys.stream, {"n": str(n)})) for n in range(count)]


async def test_trim_keeps_pending_and_undelivered_entries(
    redis: aioredis.Redis, keys: StreamKeys
) -> None:
    ids = await _fill(redis, keys, 10)
    await redis.xgroup_create(keys.stream, keys.group, id="0")
    await redis.xreadgroup(keys.group, "c", {keys.stream: ">"}, count=6)  # 0..5 delivered
    await redis.xack(keys.stream, keys.group, *ids[:3], ids[4])  # 3 and 5 still pending

    assert await stream_housekeeping.safe_trim_id(redis, keys) == ids[3]
    trimmed = await stream_housekeeping.trim(
        redis, keys, keep_seconds=0, now_ms=int(time.time() * 1000) + 10, approximate=False
    )

    left = [str(entry_id) for entry_id, _ in await redis.xrange(keys.stream)]
    assert trimmed == 3 and left == ids[3:]
    assert (await redis.xpending(keys.stream, keys.group))["pending"] == 2


async def test_trim_keeps_recent_history_and_trims_nothing_without_a_group(
    redis: aioredis.Redis, keys: StreamKeys
) -> None:
    ids = await _fill(redis, keys, 5)
    assert (
        await stream_housekeeping.trim(
            redis, keys, keep_seconds=0, now_ms=int(time.time() * 1000), approximate=False
        )
        == 0
    )  # no group yet: nobody has read anything
    await redis.xgroup_create(keys.stream, keys.group, id="$")
    kept = await stream_housekeeping.trim(
        redis, keys, keep_seconds=3600, now_ms=int(time.time() * 1000), approximate=False
    )
    assert kept == 0 and len(await redis.xrange(keys.stream)) == len(ids)


async def test_only_idle_consumers_without_pending_entries_are_forgotten(
    redis: aioredis.Redis, keys: StreamKeys
) -> None:
    await _fill(redis, keys, 2)
    await redis.xgroup_create(keys.stream, keys.group, id="0")
    await redis.xreadgroup(keys.group, "holds-one", {keys.stream: ">"}, count=1)
    await redis.xgroup_createconsumer(keys.stream, keys.group, "empty-handed")
    await redis.xgroup_createconsumer(keys.stream, keys.group, "me")

    removed = await stream_housekeeping.forget_idle_consumers(redis, keys, idle_ms=-1, keep="me")

    names = {c["name"] for c in await redis.xinfo_consumers(keys.stream, keys.group)}
    assert "empty-handed" in removed and names == {"holds-one", "me"}
