"""How Flowline's background loops wait: a backoff after failures (so an outage is no hot
loop), and a sleep that a stop request ends early (so shutdown is never held up by a nap)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


@dataclass(slots=True)
class Backoff:
    """Exponential: `first` doubled at each failure in a row, at most `ceiling` seconds."""

    first: float = 0.1
    ceiling: float = 5.0
    failures: int = 0

    def next_delay(self) -> float:
        delay = min(self.first * 2.0**self.failures, self.ceiling)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`, or less if `stop` is set meanwhile; True when it was."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
