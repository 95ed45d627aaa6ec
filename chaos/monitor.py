"""Sampling over time: each Flowline process's resident memory (VmRSS from /proc, per process
lifetime, since a restart resets it) and the stream's length, pending entries and lag. The
checker looks for memory that keeps growing; the table shows the rest."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chaos.processes import Flowline


@dataclass(frozen=True, slots=True)
class StreamSample:
    t: float
    length: int | None
    pending: int | None
    lag: int | None


@dataclass
class Samples:
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    """Lifetime label -> [(time, bytes)]."""
    stream: list[StreamSample] = field(default_factory=list)


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


async def stream_sample(client: aioredis.Redis, stream: str, group: str) -> StreamSample:
    length = pending = lag = None
    with contextlib.suppress(RedisError, OSError):
        length = int(await client.xlen(stream))
        pending = int((await client.xpending(stream, group))["pending"])
        for info in await client.xinfo_groups(stream):
            if info["name"] in (group, group.encode()):
                lag = None if info.get("lag") is None else int(info["lag"])
    return StreamSample(time.time(), length, pending, lag)


class Monitor:
    def __init__(
        self, flowline: Flowline, redis: aioredis.Redis, stream: str, group: str, out: Path
    ) -> None:
        self._flowline, self._redis = flowline, redis
        self._stream, self._group, self._out = stream, group, out
        self.samples = Samples()

    async def sample(self) -> None:
        now, memory = time.time(), {}
        for life in list(self._flowline.current.values()):
            if life.running and (rss := rss_bytes(life.pid)) is not None:
                self.samples.rss.setdefault(life.label, []).append((now, rss))
                memory[life.label] = rss
        stream = await stream_sample(self._redis, self._stream, self._group)
        self.samples.stream.append(stream)
        record = {"t": now, "rss": memory, "length": stream.length, "pending": stream.pending}
        with self._out.open("ab") as out:
            out.write(orjson.dumps({**record, "lag": stream.lag}) + b"\n")

    async def run(self, stop: asyncio.Event, interval: float = 2.0) -> None:
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
