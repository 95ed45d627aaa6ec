"""Durable timers: a wait step's end, a human task's deadline, an action's next attempt.
Firing one turns it into a `run.resume` event in the outbox, in the same transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from workflow_core import events
from workflow_core.ids import new_id
from workflow_core.log import get_logger
from workflow_core.persistence import outbox, sql
from workflow_core.persistence.pool import Connection, Executor
from workflow_core.persistence.tables import timers

log = get_logger(__name__)

CHANNEL = "flowline_timers"


async def fire_due(conn: Connection, limit: int) -> list[Any]:
    """Fire up to `limit` timers that are due: mark them and queue their resume events, in the
    caller's transaction. Timers another scheduler holds are skipped."""
    rows = await sql.fetch(
        conn,
        select(timers.c.id, timers.c.run_id, timers.c.kind, timers.c.payload)
        .where(timers.c.fired_at.is_(None), timers.c.due_at <= func.now())
        .order_by(timers.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True),
    )
    if rows:
        await sql.execute(
            conn,
            update(timers)
            .where(timers.c.id.in_([row["id"] for row in rows]))
            .values(fired_at=func.now()),
        )
        await outbox.add_events(conn, [_resume(row) for row in rows])
    return rows


# The fields of a resume event that a timer's payload cannot replace.
_OWN_FIELDS = frozenset({"event_id", "event_type", "run_id", "cause", "timer_id"})


def _resume(row: Any) -> events.Event:
    """A fired timer's resume event. A payload that is not an object, or that names the
    event's own fields, is left out with an error in the log: the run is resumed without it
    (and fails with the reason if it needed it) rather than every timer stalling behind it."""
    payload = row["payload"]
    if not isinstance(payload, dict) or _OWN_FIELDS & payload.keys():
        log.error("timer_payload_unreadable", timer_id=str(row["id"]), run_id=str(row["run_id"]))
        payload = (
            {k: v for k, v in payload.items() if k not in _OWN_FIELDS}
            if isinstance(payload, dict)
            else {}
        )
    return events.run_resume(
        new_id(), row["run_id"], row["kind"], timer_id=str(row["id"]), **payload
    )


async def next_due_in(db: Executor) -> float | None:
    """Seconds until the next timer is due by the database's clock (negative: overdue)."""
    query = select(func.extract("epoch", func.min(timers.c.due_at) - func.now())).where(
        timers.c.fired_at.is_(None)
    )
    due_in = await sql.fetchval(db, query)
    return None if due_in is None else float(due_in)
