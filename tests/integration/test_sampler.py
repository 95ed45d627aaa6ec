"""The sampled gauges on real PostgreSQL and Redis: what a sample reads, and a dependency that
does not answer marked down (and said once in the log, not at every sample)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.flows import publish_all, submit
from tests.support.net import free_port
from workflow_core import metrics
from workflow_core.adapters import streams
from workflow_core.adapters.streams import StreamKeys
from workflow_core.persistence.pool import Pool
from workflow_core.sampler import Sampler
from workflow_core.settings import Settings


def gauge(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


async def test_a_sample_reads_the_outbox_the_stream_and_the_runs(
    pool: Pool,
    redis: aioredis.Redis,
    engine: AsyncEngine,
    settings: Settings,
    keys: StreamKeys,
) -> None:
    sampler = Sampler(pool, redis, keys)
    await sampler.sample()  # no stream yet: it has no groups, and nothing is wrong
    assert gauge("flowline_stream_length") == 0
    assert gauge("flowline_dependency_up", dependency="redis") == 1

    for n in range(3):
        await submit(engine, {"n": n})
    await sampler.sample()
    assert gauge("flowline_outbox_unpublished") == 3
    assert gauge("flowline_runs", status="completed") == 0

    await streams.ensure_group(redis, keys)
    assert await publish_all(engine, settings) == 3
    await sampler.sample()
    assert gauge("flowline_outbox_unpublished") == 0
    assert gauge("flowline_stream_length") == 3
    assert gauge("flowline_stream_lag", group=keys.group) == 3
    assert gauge("flowline_stream_pending", group=keys.group) == 0
    assert gauge("flowline_dead_letters") == 0
    assert gauge("flowline_dependency_up", dependency="postgresql") == 1
    assert (gauge("flowline_sample_timestamp_seconds") or 0) > 0


async def test_redis_away_is_marked_down_and_logged_once(
    pool: Pool, keys: StreamKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    # No retries: the sampler's own handling is under test, not the client's (3 s per call).
    nowhere = aioredis.Redis(
        port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    sampler = Sampler(pool, nowhere, keys)
    try:
        for _ in range(3):
            await sampler.sample()
    finally:
        await nowhere.aclose()
    assert gauge("flowline_dependency_up", dependency="redis") == 0
    assert gauge("flowline_dependency_up", dependency="postgresql") == 1
    logged = capsys.readouterr()
    assert (logged.out + logged.err).count("metrics_sample_failed") == 1
