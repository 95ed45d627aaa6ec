"""`python -m bench.loadgen`: the load generator, in a process of its own so that its CPU is
measured apart from the harness.

    python -m bench.loadgen --port P --n N --conc C [--rate R] --out results.json

Without `--rate` it sends N forms as fast as C keep-alive connections allow (burst); with
`--rate R` it is open-loop: form i is due at start + i/R whatever happened to the earlier
ones, on an idle connection (at most C are opened; when all are busy the send waits, and that
lag is recorded). For every form it records the time just before sending, the time the
response was read, the status and the submission id.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import loop
from bench.http import Connection, HttpError

SUBMIT = "/submit"
FAILURES = (OSError, EOFError, TimeoutError, HttpError, ValueError, asyncio.LimitOverrunError)


def form(i: int) -> bytes:
    return orjson.dumps(
        {
            "template_id": "form_submitted",
            "data": {"email": f"user{i}@example.com", "name": "John Doe", "message": "Hello world"},
            "org_id": "org_123",
        }
    )


@dataclass
class Records:
    n: int
    sent: list[float] = field(init=False)
    received: list[float] = field(init=False)
    scheduled: list[float] = field(init=False)
    status: list[int] = field(init=False)
    ids: list[str] = field(init=False)
    errors: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.sent, self.received = [0.0] * self.n, [0.0] * self.n
        self.scheduled, self.status, self.ids = [0.0] * self.n, [0] * self.n, [""] * self.n


class LoadGenerator:
    def __init__(self, host: str, port: int, n: int, conc: int, rate: float | None) -> None:
        self.host, self.port, self.n, self.conc, self.rate = host, port, n, conc, rate
        self.records = Records(n)
        self.connections: list[Connection] = []
        self.cpu_seconds = 0.0

    def _connection(self) -> Connection:
        connection = Connection(self.host, self.port)
        self.connections.append(connection)
        return connection

    async def submit(self, connection: Connection, i: int) -> None:
        records, body = self.records, form(i)
        try:
            await connection.ready()
            records.sent[i] = time.time()
            connection.send("POST", SUBMIT, body)
            response = await connection.receive()
        except FAILURES as error:
            records.received[i] = time.time()
            records.sent[i] = records.sent[i] or records.received[i]
            records.errors[type(error).__name__] += 1
            return
        records.received[i] = time.time()
        records.status[i] = response.status
        if response.status == 202:
            records.ids[i] = orjson.loads(response.body)["submission_id"]
        else:
            records.errors[f"HTTP {response.status}"] += 1

    async def burst(self) -> None:
        connections = [self._connection() for _ in range(self.conc)]
        await asyncio.gather(*(c.open() for c in connections))
        due = iter(range(self.n))

        async def drive(connection: Connection) -> None:
            for i in due:
                await self.submit(connection, i)

        cpu = time.process_time()
        await asyncio.gather(*(drive(c) for c in connections))
        self.cpu_seconds = time.process_time() - cpu

    async def steady(self, rate: float) -> None:
        idle: asyncio.LifoQueue[Connection] = asyncio.LifoQueue()
        running: set[asyncio.Task[None]] = set()

        async def submit_then_release(connection: Connection, i: int) -> None:
            try:
                await self.submit(connection, i)
            finally:
                idle.put_nowait(connection)

        cpu = time.process_time()
        start = time.perf_counter() + 0.01
        wall_start = time.time() + (start - time.perf_counter())
        for i in range(self.n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.records.scheduled[i] = wall_start + i / rate
            if idle.empty() and len(self.connections) < self.conc:
                connection = self._connection()
            else:
                connection = await idle.get()
            task = asyncio.create_task(submit_then_release(connection, i))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)
        self.cpu_seconds = time.process_time() - cpu

    async def run(self) -> dict[str, Any]:
        if self.rate is None:
            await self.burst()
        else:
            await self.steady(self.rate)
        await asyncio.gather(*(c.close() for c in self.connections))
        r = self.records
        return {
            "mode": "burst" if self.rate is None else "rate",
            "n": self.n,
            "conc": self.conc,
            "rate": self.rate,
            "cpu_seconds": self.cpu_seconds,
            "connections": len(self.connections),
            "connects": sum(c.opened for c in self.connections),
            "errors": dict(r.errors),
            "sent": r.sent,
            "received": r.received,
            "scheduled": r.scheduled if self.rate is not None else None,
            "status": r.status,
            "ids": r.ids,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="Flowline load generator (see bench/loadgen.py)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--conc", type=int, default=32)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    generator = LoadGenerator(args.host, args.port, args.n, args.conc, args.rate)
    result = loop.run(generator.run())
    args.out.write_bytes(orjson.dumps(result))


if __name__ == "__main__":
    main()
