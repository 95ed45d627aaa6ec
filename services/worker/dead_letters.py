"""Poison: an entry that can never be processed, or failed DELIVERY_LIMIT times, goes to the
dead-letter stream with its error, after the runs it was driving are failed (in that order: if
their failure cannot be recorded, the entry stays pending for another try)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from workflow_core.adapters import dead_letter_stream
from workflow_core.adapters.streams import Entry, StreamKeys
from workflow_core.log import get_logger

log = get_logger(__name__)

DeadLetterHook = Callable[[Entry, str], Awaitable[None]]


class DeadLetters:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: StreamKeys,
        *,
        consumer: str,
        delivery_limit: int,
        max_length: int,
        on_dead_letter: DeadLetterHook | None = None,
    ) -> None:
        self._redis, self._keys, self._consumer = redis, keys, consumer
        self._limit, self._max_length = delivery_limit, max_length
        self._on_dead_letter = on_dead_letter
        self.count = 0

    async def move_safely(self, entry: Entry, reason: str | None) -> None:
        """`move`, or leave the entry pending when Redis or PostgreSQL is away."""
        try:
            await self.move(entry, reason)
        except Exception as error:
            log.warning(
                "dead_letter_failed", entry_id=entry.id, error=f"{type(error).__name__}: {error}"
            )

    async def move(self, entry: Entry, reason: str | None) -> None:
        """`reason` None: the entry went over the limit after crashes; the last error a handler
        recorded for it is the reason."""
        if reason is None:
            last = await self._redis.hget(self._keys.errors, entry.id)
            if isinstance(last, bytes):
                last = last.decode(errors="replace")
            cause = last or "no error recorded (did the worker holding it die?)"
            reason = f"{cause}; delivered {entry.deliveries} times, limit {self._limit}"
        if self._on_dead_letter is not None:
            await self._on_dead_letter(entry, reason)
        dead_id = await dead_letter_stream.move_to_dead_letters(
            self._redis, self._keys, entry, reason, self._consumer, max_length=self._max_length
        )
        self.count += 1
        log.warning(
            "event_dead_lettered",
            entry_id=entry.id,
            dead_letter_id=dead_id,
            deliveries=entry.deliveries,
            error=reason,
        )
