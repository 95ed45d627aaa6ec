"""Fires durable timers on time: sleeps until the next one is due (or a new one is announced
by NOTIFY flowline_timers), then turns due timers into resume events. Several workers may run
it at once; each timer fires once (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from workflow_core.log import get_logger
from workflow_core.persistence import timers
from workflow_core.persistence.db import translate_errors
from workflow_core.persistence.listen import Listener

log = get_logger(__name__)


class TimerScheduler:
    def __init__(
        self, engine: AsyncEngine, *, dsn: str, poll_seconds: float = 1.0, batch_size: int = 200
    ) -> None:
        self._engine = engine
        self._listener = Listener(dsn, timers.CHANNEL)
        self._poll_seconds, self._batch_size = poll_seconds, batch_size
        self.fired = 0

    async def fire_due(self) -> int:
        async with translate_errors(), self._engine.begin() as conn:
            fired = len(await timers.fire_due(conn, self._batch_size))
        self.fired += fired
        return fired

    async def _seconds_to_next(self) -> float:
        async with translate_errors(), self._engine.connect() as conn:
            due = await timers.next_due(conn)
        if due is None:
            return self._poll_seconds
        return min(max((due - datetime.now(UTC)).total_seconds(), 0.0), self._poll_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        async with self._listener:
            while not stop.is_set():
                try:
                    if await self.fire_due() == self._batch_size:
                        continue
                    wait = await self._seconds_to_next()
                except Exception as error:
                    log.warning("timers_failed", error=f"{type(error).__name__}: {error}")
                    wait = self._poll_seconds
                if wait > 0:
                    with contextlib.suppress(Exception):
                        await self._listener.wait(wait, stop)
