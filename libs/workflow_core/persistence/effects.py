"""The effect ledger: one row per effect keyed by (run, step visit, action). An email is
claimed here before it is handed to the SMTP server; every effect is marked done with its
result when its step is recorded, so a redelivered event skips what was already done."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workflow_core.actions.base import ActionCall, EffectAlreadyClaimed
from workflow_core.persistence.db import translate_errors
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

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim(self, call: ActionCall) -> None:
        async with translate_errors(), self._engine.begin() as conn:
            claimed = (
                await conn.execute(
                    insert(effects)
                    .values(key=call.key, run_id=call.run_id, state=COMMITTING)
                    .on_conflict_do_nothing()
                    .returning(effects.c.key)
                )
            ).first()
        if claimed is None:
            raise EffectAlreadyClaimed(call.key)

    async def release(self, call: ActionCall) -> None:
        """Undo a claim whose effect was refused outright (nothing was delivered)."""
        async with translate_errors(), self._engine.begin() as conn:
            await conn.execute(
                delete(effects).where(effects.c.key == call.key, effects.c.state == COMMITTING)
            )
