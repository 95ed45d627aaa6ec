"""How Flowline's background loops wait: a backoff after failures (so an outage is no hot
loop), a sleep that a stop request ends early (so shutdown is never held up by a nap), a
bounded wait for tasks to end, and a pace for warnings that must not flood the log."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from workflow_core.log import get_logger

log = get_logger(__name__)


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


async def settle(tasks: list[asyncio.Task[None]], *, cancel: bool, timeout: float = 5.0) -> None:
    """Let tasks end (cancelling them first, or not), never waiting longer than `timeout`.
    On Python 3.11 a cancellation that meets a timeout inside a library can be lost, so a
    task is cancelled again rather than awaited forever."""
    if cancel:
        for task in tasks:
            task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=timeout) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=1.0)
        for task in stuck:
            log.warning("task_would_not_stop", task=task.get_name())


class Every:
    """At most one `ready()` per `seconds`; how many were held back since the last one is told
    then (for a warning that must not flood the log)."""

    __slots__ = ("_next", "_seconds", "held_back")

    def __init__(self, seconds: float) -> None:
        self._seconds, self._next, self.held_back = seconds, 0.0, 0

    def ready(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.held_back += 1
            return False
        self._next = now + self._seconds
        return True

    def take_held_back(self) -> int:
        held, self.held_back = self.held_back, 0
        return held
