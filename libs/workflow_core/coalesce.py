"""Coalescing: calls made while one batch is being prepared are carried out together.

Under load, dozens of handlers want the same kind of round trip at once (a run to insert, a
checkpoint to write, a submission to store). On a machine where a round trip costs more CPU
than the work it carries, one statement for many items is most of the win: a `Coalescer`
gathers the calls made in the same event-loop iteration (no timer, so no added latency when
idle) and hands them to `flush` as one list.

`flush` returns one result (or exception) per item, in order. If it raises instead, the batch
is carried out one item at a time with `single`, so one bad item (a constraint violation, say)
fails alone rather than failing its neighbours.
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
        single: Callable[[In], Awaitable[Out]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._flush, self._single, self._max_batch = flush, single, max_batch
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

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
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._carry_out(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

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
