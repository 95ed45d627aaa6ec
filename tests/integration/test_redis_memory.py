"""The Redis sizing measurement (bench/redis_memory.py, deploy/README.md) measures what it says
and leaves nothing behind."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bench.redis_memory import measure


async def test_pending_events_are_measured_in_a_scratch_stream_then_deleted(
    redis: aioredis.Redis, stream_name: str
) -> None:
    result = await measure(redis, stream_name, count=300)

    assert result.events == 300
    assert 300 < result.entry_bytes < 500  # the example form, as Flowline publishes it
    assert result.stream_bytes > result.events * result.entry_bytes  # entries + pending list
    assert not await redis.exists(stream_name)


async def test_it_refuses_a_stream_that_exists(redis: aioredis.Redis, stream_name: str) -> None:
    await redis.xadd(stream_name, {"x": "1"})
    with pytest.raises(ValueError, match="scratch stream"):
        await measure(redis, stream_name, count=10)
    assert await redis.xlen(stream_name) == 1
