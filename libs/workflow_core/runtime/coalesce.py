"""Coalescing: calls made while one batch is being prepared are carried out together.

Under load, dozens of handlers want the same kind of round trip at once (a run to insert, a
checkpoint to write, a submission to store). On a machine where a round trip costs more CPU
than the work it carries, one statement for many items is most of the win: a `Coalescer`
gathers the calls made in the same event-loop iteration (no timer, so no added latency when
idle) and hands them to `flush` as one list.

With `max_in_flight`, no more batches than that are carried out at once: calls made meanwhile
wait and go together in the next one. Under load batches then grow with the round trip time,
one statement serving what a busy moment brought; when idle nothing waits.

`flush` returns one result (or exception) per item, in order. If it raises instead, the batch
is carried out one item at a time (`flush` of a one-item list, or `single` when given), so one
bad item (a constraint violation, say) fails alone rather than failing its neighbours.

A coalescer wraps a plain repository call that takes a list (`runs.checkpoint_many(pool,
items)`): callers pass one item and get its result; the batching is the coalescer's alone.
Nothing depends on the order in which the event loop runs things for correctness: a batch is
only ever a list of independent items.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Coalescer(Generic[In, Out]):
    def __init__(
        self,
        flush: Callable[[list[In]], Awaitable[Sequence[Out | BaseException]]],
        single: Callable[[In], Awaitable[Out]] | None = None,
        *,
        max_batch: int = 256,
        max_in_flight: int | None = None,
    ) -> None:
        self._flush, self._max_batch = flush, max_batch
        self._single = single or self._alone
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def _alone(self, item: In) -> Out:
        [result] = await self._flush([item])
        if isinstance(result, BaseException):
            raise result
        return result

    async def __call__(self, item: In) -> Out:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max_batch:
            self._start()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        self._scheduled = False
        while self._pending and (
            self._max_in_flight is None or len(self._running) < self._max_in_flight
        ):
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            task = asyncio.get_running_loop().create_task(self._carry_out(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    async def _carry_out(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        items = [item for item, _ in batch]
        results: Sequence[Out | BaseException] | None = None
        if len(items) > 1:
            try:
                results = await self._flush(items)
            except Exception:
                results = None  # one at a time, below: the bad item fails alone
        if results is None:
            results = await asyncio.gather(
                *(self._single(i) for i in items), return_exceptions=True
            )
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its caller was cancelled
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
