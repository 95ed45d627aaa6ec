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
from workflow_core.coalesce import Coalescer
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


_CLAIM = (
    "INSERT INTO effects (key, run_id, state) "
    "SELECT key, run_id, $3 FROM unnest($1::text[], $2::uuid[]) AS u(key, run_id) "
    "ON CONFLICT DO NOTHING RETURNING key"
)


async def claim_many(pg: Pool, calls: list[ActionCall]) -> list[bool]:
    """Claim each effect unless claimed already; True for those this call claimed."""
    rows = await pg.fetch(_CLAIM, [c.key for c in calls], [c.run_id for c in calls], COMMITTING)
    claimed = {row["key"] for row in rows}
    return [call.key in claimed for call in calls]


class DbEffectLedger:
    """`EffectLedger` on PostgreSQL. A claim is committed before it returns; claims made at
    the same moment by concurrent runs share one statement (coalesce.py)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._claims: Coalescer[ActionCall, bool] = Coalescer(
            lambda calls: claim_many(pool, calls), self._claim_one
        )

    async def _claim_one(self, call: ActionCall) -> bool:
        [claimed] = await claim_many(self._pool, [call])
        return claimed

    async def claim(self, call: ActionCall) -> None:
        async with translate_errors():
            claimed = await self._claims(call)
        if not claimed:
            raise EffectAlreadyClaimed(call.key)

    async def release(self, call: ActionCall) -> None:
        """Undo a claim whose effect was refused outright (nothing was delivered)."""
        async with translate_errors():
            await self._pool.execute(
                "DELETE FROM effects WHERE key = $1 AND state = $2", call.key, COMMITTING
            )
