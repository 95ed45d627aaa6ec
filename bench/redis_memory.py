"""`python -m bench.redis_memory`: how much Redis memory 1,000 pending events take, for sizing
Redis (deploy/README.md).

It adds N events of the original design's example form, encoded exactly as Flowline publishes
them, to a scratch stream of its own in the Redis named by REDIS_* (environment or .env),
creates a consumer group and reads them all into one consumer, so every entry is also in the
group's pending entries list, as while workers hold them. It reads MEMORY USAGE of the stream
(entries and group together) and INFO memory's used_memory before and after, then deletes the
stream. Nothing else on the server is touched.

    python -m bench.redis_memory [--events 1000] [--extra-bytes 0]
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from tests.support.examples import EXAMPLE_FORM
from workflow_core import events
from workflow_core.adapters import streams
from workflow_core.settings import load_settings


@dataclass(frozen=True)
class Measurement:
    events: int
    entry_bytes: int
    """The encoded fields of one event (type, event_id, payload)."""
    stream_bytes: int
    """MEMORY USAGE of the stream with its group and pending entries (all of them sampled)."""
    used_memory_delta: int
    """INFO memory's used_memory after minus before (other clients' work included)."""

    @property
    def per_1000(self) -> float:
        return self.stream_bytes * 1000 / self.events


def sample_event(extra_bytes: int = 0) -> events.Event:
    data: dict[str, Any] = dict(EXAMPLE_FORM["data"])
    if extra_bytes:
        data["padding"] = "x" * extra_bytes
    return events.form_submitted(
        uuid.uuid4(),
        uuid.uuid4(),
        EXAMPLE_FORM["template_id"],
        EXAMPLE_FORM["org_id"],
        data,
        datetime.now(UTC),
    )


async def measure(
    redis: aioredis.Redis, stream: str, *, count: int = 1000, extra_bytes: int = 0
) -> Measurement:
    """Fill `stream` (which must not exist), measure, delete it (whatever happens)."""
    if await redis.exists(stream):
        raise ValueError(f"{stream} exists: measure in a scratch stream")
    before = int((await redis.info("memory"))["used_memory"])
    try:
        fields = [sample_event(extra_bytes).to_fields() for _ in range(count)]
        async with redis.pipeline(transaction=False) as pipe:
            for entry in fields:
                pipe.xadd(stream, entry)  # type: ignore[arg-type]
            await pipe.execute()
        await redis.xgroup_create(stream, "measure", id="0")
        await redis.xreadgroup("measure", "consumer", {stream: ">"}, count=count)
        pending = await redis.xpending(stream, "measure")
        if int(pending["pending"]) != count:
            raise RuntimeError(f"{pending['pending']} of {count} entries are pending")
        stream_bytes = int(await redis.memory_usage(stream, samples=0) or 0)
        after = int((await redis.info("memory"))["used_memory"])
    finally:
        await redis.delete(stream)
    entry_bytes = sum(len(k) + len(v) for k, v in fields[0].items())
    return Measurement(count, entry_bytes, stream_bytes, after - before)


async def main_async(count: int, extra_bytes: int) -> None:
    settings = load_settings()
    redis = streams.client(settings)
    stream = f"flowline-measure:{uuid.uuid4().hex[:8]}"
    try:
        result = await measure(redis, stream, count=count, extra_bytes=extra_bytes)
    finally:
        await redis.aclose()
    print(
        f"{result.events} pending events of {result.entry_bytes} bytes each: "
        f"MEMORY USAGE {result.stream_bytes:,} bytes ({result.per_1000 / 1024:,.0f} KiB per "
        f"1,000), used_memory +{result.used_memory_delta:,} bytes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_memory")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--extra-bytes", type=int, default=0, help="padding in each form")
    args = parser.parse_args()
    asyncio.run(main_async(args.events, args.extra_bytes))


if __name__ == "__main__":
    main()
