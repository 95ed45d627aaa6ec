"""The effect ledger: one row per effect keyed by (run, step visit, action). Every effect is
marked `done` with its result when its step is recorded, so a redelivered event skips what
was already done.

An email, which cannot be taken back, goes through two more states first:
    reserved    taken by one attempt (its `owner`) before its SMTP transaction starts; a lock
                against a second live attempt, and proof that nothing was handed over yet
    committing  the content is being handed to the server: never sent again
For a run's first step the reservations are taken with the run's creation (runs.insert_many):
the worker that created the run holds them (`HELD` in its ledger) and skips `reserve`.
A reservation whose owner is gone is taken over once it is older than `stale_after` (longer
than any live attempt can hold one). The `committing` record is written right before the
content without waiting for it: a crash can fall between the two only for an instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from workflow_core.actions.base import ActionCall, EffectAlreadyClaimed
from workflow_core.errors import EffectBusy
from workflow_core.persistence.db import translate_errors
from workflow_core.persistence.pg import Pool, PoolConnection
from workflow_core.persistence.tables import effects

RESERVED, COMMITTING, DONE = "reserved", "committing", "done"
HELD = "held"  # never stored: reserved by this process with the run's creation


@dataclass(frozen=True, slots=True)
class EffectState:
    state: str
    result: dict[str, Any] | None


async def for_run(conn: AsyncConnection, run_id: UUID) -> dict[str, EffectState]:
    rows = await conn.execute(
        select(effects.c.key, effects.c.state, effects.c.result).where(effects.c.run_id == run_id)
    )
    return {row.key: EffectState(row.state, row.result) for row in rows}


_RESERVE = """
    INSERT INTO effects (key, run_id, state, owner) VALUES ($1, $2, 'reserved', $3)
    ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, updated_at = now()
    WHERE effects.state = 'reserved'
      AND (effects.owner = excluded.owner
           OR effects.updated_at < now() - make_interval(secs => $4))
    RETURNING true
"""
_HOLDER = """
    SELECT state, GREATEST(0, $2 - extract(epoch FROM now() - updated_at)) AS wait
    FROM effects WHERE key = $1
"""
_HAND_OVER = (
    "UPDATE effects SET state = 'committing', updated_at = now() "
    "WHERE key = ANY($1::text[]) AND owner = $2 AND state = 'reserved'"
)
_RELEASE = (
    "DELETE FROM effects WHERE key = $1 AND owner = $2 AND state IN ('reserved', 'committing')"
)


async def prepare_connection(connection: Any) -> None:
    """Have the hand-over statement prepared on every pooled connection, so that starting it
    puts it on the wire at once (a statement prepared on first use would cost a round trip
    between the record and the hand-over)."""
    await connection.execute(_HAND_OVER, [], "")


@dataclass(slots=True)
class _HandOvers:
    """The hand-overs started in one event-loop iteration: one statement records them all.
    `sent` resolves once it is on the wire, `recorded` once it is committed."""

    keys: list[str]
    sent: asyncio.Future[None]
    recorded: asyncio.Future[None]

    def fail(self, error: BaseException) -> None:
        for future in (self.sent, self.recorded):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a waiter may have gone (cancelled)


class DbEffectLedger:
    """`EffectLedger` on PostgreSQL. `owner` names this process (a restarted worker is a new
    owner); `stale_after` is how old a reservation must be before another owner takes it."""

    def __init__(self, pool: Pool, *, owner: str, stale_after: float) -> None:
        self._pool, self._owner, self._stale_after = pool, owner, stale_after
        self._gathering: _HandOvers | None = None
        self._recording: set[asyncio.Task[None]] = set()

    @property
    def owner(self) -> str:
        return self._owner

    async def reserve(self, call: ActionCall) -> None:
        async with translate_errors():
            taken = await self._pool.fetchval(
                _RESERVE, call.key, call.run_id, self._owner, self._stale_after
            )
            if taken:
                return
            holder = await self._pool.fetchrow(_HOLDER, call.key, self._stale_after)
        if holder is None:  # released between the two statements: take it next time
            raise EffectBusy("the effect was just released; trying again", retry_after=0.1)
        if holder["state"] != RESERVED:
            raise EffectAlreadyClaimed(call.key)
        raise EffectBusy(
            "another attempt holds this email (or held it and died); trying again once its "
            "reservation is stale",
            retry_after=float(holder["wait"]) + 0.5,
        )

    async def start_hand_over(self, call: ActionCall) -> Awaitable[None]:
        batch = self._gathering
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = _HandOvers([], loop.create_future(), loop.create_future())
            self._gathering = batch
            loop.call_soon(self._record, batch)  # once this iteration's emails have joined
        batch.keys.append(call.key)
        await asyncio.shield(batch.sent)
        return asyncio.shield(batch.recorded)

    def _record(self, batch: _HandOvers) -> None:
        self._gathering = None
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _write(self, batch: _HandOvers) -> None:
        try:
            async with translate_errors():
                connection = await self._pool.acquire()
        except BaseException as error:  # every waiter gets it
            batch.fail(error)
            return
        try:
            statement = asyncio.ensure_future(self._update(connection, batch.keys))
            await asyncio.sleep(0)  # the statement runs up to its first wait: it is sent
            if not batch.sent.done():
                batch.sent.set_result(None)
            await statement
            batch.recorded.set_result(None)
        except BaseException as error:
            batch.fail(error)
        finally:
            await self._pool.release(connection)

    async def _update(self, connection: PoolConnection, keys: list[str]) -> None:
        async with translate_errors():
            await connection.execute(_HAND_OVER, keys, self._owner)

    async def release(self, key: str) -> None:
        async with translate_errors():
            await self._pool.execute(_RELEASE, key, self._owner)
