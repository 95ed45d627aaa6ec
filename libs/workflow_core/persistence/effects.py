"""The effect ledger: one row per effect keyed by (run, step visit, action). An email is
claimed here before it is handed to the SMTP server; every effect is marked done with its
result when its step is recorded, so a redelivered event skips what was already done."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from workflow_core.actions.base import ActionCall, EffectAlreadyClaimed
from workflow_core.persistence.db import translate_errors
from workflow_core.persistence.pg import Pool
from workflow_core.persistence.tables import effects

COMMITTING, DONE = "committing", "done"


@dataclass(frozen=True, slots=True)
class EffectState:
    state: str
    result: dict[str, Any] | None


async def for_run(conn: AsyncConnection, run_id: UUID) -> dict[str, EffectState]:
    rows = await conn.execute(
        select(effects.c.key, effects.c.state, effects.c.result).where(effects.c.run_id == run_id)
    )
    return {row.key: EffectState(row.state, row.result) for row in rows}


class DbEffectLedger:
    """`EffectLedger` on PostgreSQL; each claim is its own committed statement."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def claim(self, call: ActionCall) -> None:
        async with translate_errors():
            claimed = await self._pool.fetchval(
                "INSERT INTO effects (key, run_id, state) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING RETURNING true",
                call.key,
                call.run_id,
                COMMITTING,
            )
        if not claimed:
            raise EffectAlreadyClaimed(call.key)

    async def release(self, call: ActionCall) -> None:
        """Undo a claim whose effect was refused outright (nothing was delivered)."""
        async with translate_errors():
            await self._pool.execute(
                "DELETE FROM effects WHERE key = $1 AND state = $2", call.key, COMMITTING
            )
