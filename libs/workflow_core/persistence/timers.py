"""Durable timers: a wait step's end, a human task's deadline, an action's next attempt.
Firing one turns it into a `run.resume` event in the outbox, in the same transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from workflow_core import events
from workflow_core.ids import new_id
from workflow_core.persistence import outbox
from workflow_core.persistence.tables import timers

CHANNEL = "flowline_timers"


async def fire_due(conn: AsyncConnection, limit: int) -> list[Any]:
    """Fire up to `limit` timers that are due: mark them and queue their resume events.
    Timers another scheduler holds are skipped."""
    rows = list(
        await conn.execute(
            select(timers.c.id, timers.c.run_id, timers.c.kind, timers.c.payload)
            .where(timers.c.fired_at.is_(None), timers.c.due_at <= func.now())
            .order_by(timers.c.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if rows:
        await conn.execute(
            update(timers)
            .where(timers.c.id.in_([row.id for row in rows]))
            .values(fired_at=func.now())
        )
        for row in rows:
            await outbox.add(
                conn,
                events.run_resume(
                    new_id(), row.run_id, row.kind, timer_id=str(row.id), **row.payload
                ),
            )
    return rows


async def next_due(conn: AsyncConnection) -> datetime | None:
    query = select(func.min(timers.c.due_at)).where(timers.c.fired_at.is_(None))
    due: datetime | None = (await conn.execute(query)).scalar()
    return due
