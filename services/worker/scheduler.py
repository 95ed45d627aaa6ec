"""Fires durable timers on time: sleeps until the next one is due (or a new one is announced
by NOTIFY flowline_timers), then turns due timers into resume events. Several workers may run
it at once; each timer fires once (FOR UPDATE SKIP LOCKED). Time is the database's: a timer is
due when PostgreSQL's clock says so.

Fires schedules the same way (`ScheduleFirer`): a due schedule's ticks become `schedule`
events, queued in the outbox in the transaction that moves its next fire time on."""

from __future__ import annotations

import asyncio
import contextlib

from workflow_core import metrics
from workflow_core.log import get_logger
from workflow_core.persistence import schedules, timers
from workflow_core.persistence.listen import Channel
from workflow_core.persistence.pool import Pool, translate_errors

log = get_logger(__name__)


class _Clock:
    """Fire what is due (a batch at a time), then sleep until the next is due, at most
    `poll_seconds`, or until stopped. A failure is logged and retried after `poll_seconds`."""

    _name: str
    _pool: Pool
    _poll_seconds: float
    _batch_size: int

    async def fire_due(self) -> int:
        raise NotImplementedError

    async def _next_due_in(self) -> float | None:
        """Seconds until the next is due (by the database's clock), None when none is."""
        raise NotImplementedError

    async def _pause(self, seconds: float, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(seconds, 0.01))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if await self.fire_due() == self._batch_size:
                    continue
                async with translate_errors():
                    due_in = await self._next_due_in()
                wait = self._poll_seconds if due_in is None else max(due_in, 0.0)
            except Exception as error:
                log.warning(f"{self._name}_failed", error=f"{type(error).__name__}: {error}")
                wait = self._poll_seconds
            await self._pause(min(wait, self._poll_seconds), stop)


class TimerScheduler(_Clock):
    _name = "timers"

    def __init__(
        self, pool: Pool, announced: Channel, *, poll_seconds: float = 1.0, batch_size: int = 200
    ) -> None:
        """`announced`: the LISTEN channel on which new timers are announced."""
        self._pool, self._announced = pool, announced
        self._poll_seconds, self._batch_size = poll_seconds, batch_size
        self.fired = 0

    async def fire_due(self) -> int:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            fired = len(await timers.fire_due(conn, self._batch_size))
        self.fired += fired
        return fired

    async def _next_due_in(self) -> float | None:
        return await timers.next_due_in(self._pool)

    async def _pause(self, seconds: float, stop: asyncio.Event) -> None:
        """Until a timer is due, or a new one is announced (it may be due sooner)."""
        if seconds > 0:
            with contextlib.suppress(Exception):
                await self._announced.wait(seconds, stop)


class ScheduleFirer(_Clock):
    """A new or changed schedule is seen within the poll interval: it never fires sooner than
    its first tick after it was saved."""

    _name = "schedules"

    def __init__(
        self,
        pool: Pool,
        *,
        poll_seconds: float = 1.0,
        catch_up_limit: int = 100,
        batch_size: int = 100,
    ) -> None:
        self._pool, self._poll_seconds = pool, poll_seconds
        self._catch_up_limit, self._batch_size = catch_up_limit, batch_size
        self.fired = 0

    async def fire_due(self) -> int:
        """Fire the due schedules (up to a batch of them); how many schedules fired."""
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            queued = await schedules.fire_due(
                conn, limit=self._batch_size, catch_up_limit=self._catch_up_limit
            )
        self.fired += len(queued)
        # Each event of a schedule carries how many of its ticks were skipped.
        skipped = {tick.payload["workflow_id"]: tick.payload["data"]["missed"] for tick in queued}
        metrics.SCHEDULE_TICKS.labels("fired").inc(len(queued))
        metrics.SCHEDULE_TICKS.labels("skipped").inc(sum(skipped.values()))
        return len(skipped)

    async def _next_due_in(self) -> float | None:
        return await schedules.seconds_to_next(self._pool)
