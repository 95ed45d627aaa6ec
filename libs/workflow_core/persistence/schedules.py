"""Schedules: the next tick of each active workflow whose trigger is a schedule. Kept in step
with the workflow (`sync` on every create, new version and activation; `drop` on
deactivation); fired by the workers' schedulers (`fire_due`). Time is the database's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from workflow_core import events
from workflow_core.engine.schedule import SCHEDULE, due_ticks, next_fire
from workflow_core.persistence import outbox, sql
from workflow_core.persistence.pool import Connection, Executor
from workflow_core.persistence.tables import schedules


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    workflow_id: UUID
    version: int
    org_id: str | None
    cron: str
    timezone: str
    catch_up: bool
    next_fire_at: datetime
    last_fired_at: datetime | None


_COLUMNS = (
    schedules.c.workflow_id,
    schedules.c.version,
    schedules.c.org_id,
    schedules.c.cron,
    schedules.c.timezone,
    schedules.c.catch_up,
    schedules.c.next_fire_at,
    schedules.c.last_fired_at,
)


async def sync(
    db: Executor, workflow_id: UUID, version: int, org_id: str | None, definition: dict[str, Any]
) -> None:
    """Make the workflow's schedule follow `definition` (already validated): none unless its
    trigger is a schedule. A new version with the same cron and time zone keeps the next fire
    time; a changed one fires next at the first tick from now."""
    trigger = definition.get("trigger") or {}
    if trigger.get("type") != SCHEDULE:
        await drop(db, workflow_id)
        return
    cron, timezone = trigger["cron"], trigger.get("timezone", "UTC")
    now = await sql.fetchval(db, select(func.now()))
    values = {
        "workflow_id": workflow_id,
        "version": version,
        "org_id": org_id,
        "cron": cron,
        "timezone": timezone,
        "catch_up": bool(trigger.get("catch_up", False)),
        "next_fire_at": next_fire(cron, timezone, now),
    }
    statement = insert(schedules).values(**values)
    unchanged = (schedules.c.cron == statement.excluded.cron) & (
        schedules.c.timezone == statement.excluded.timezone
    )
    await sql.execute(
        db,
        statement.on_conflict_do_update(
            index_elements=[schedules.c.workflow_id],
            set_={
                "version": statement.excluded.version,
                "org_id": statement.excluded.org_id,
                "cron": statement.excluded.cron,
                "timezone": statement.excluded.timezone,
                "catch_up": statement.excluded.catch_up,
                "next_fire_at": func.coalesce(
                    _when(unchanged, schedules.c.next_fire_at), statement.excluded.next_fire_at
                ),
                "updated_at": func.now(),
            },
        ),
    )


def _when(condition: Any, value: Any) -> Any:
    return case((condition, value), else_=None)


async def drop(db: Executor, workflow_id: UUID) -> None:
    """The workflow fires no more (deactivated, or its trigger is no longer a schedule)."""
    await sql.execute(db, delete(schedules).where(schedules.c.workflow_id == workflow_id))


async def get(db: Executor, workflow_id: UUID) -> ScheduleRecord | None:
    row = await sql.fetchrow(db, select(*_COLUMNS).where(schedules.c.workflow_id == workflow_id))
    return ScheduleRecord(*row) if row else None


async def fire_due(conn: Connection, *, limit: int, catch_up_limit: int) -> list[events.Event]:
    """Claim up to `limit` due schedules (rows another scheduler holds are skipped), queue the
    events of their due ticks and move each one's next fire time on, all in the caller's
    transaction: a tick is queued once, or (on a rollback) not at all and fired later."""
    now = await sql.fetchval(conn, select(func.now()))
    rows = await sql.fetch(
        conn,
        select(*_COLUMNS)
        .where(schedules.c.next_fire_at <= now)
        .order_by(schedules.c.next_fire_at)
        .limit(limit)
        .with_for_update(skip_locked=True),
    )
    queued: list[events.Event] = []
    for row in rows:
        schedule = ScheduleRecord(*row)
        firing = due_ticks(
            schedule.cron,
            schedule.timezone,
            next_fire_at=schedule.next_fire_at,
            now=now,
            catch_up=schedule.catch_up,
            limit=catch_up_limit,
        )
        queued.extend(
            events.schedule_tick(
                schedule.workflow_id,
                schedule.org_id,
                tick,
                cron=schedule.cron,
                timezone=schedule.timezone,
                missed=firing.missed,
            )
            for tick in firing.fire
        )
        await sql.execute(
            conn,
            update(schedules)
            .where(schedules.c.workflow_id == schedule.workflow_id)
            .values(next_fire_at=firing.next_fire_at, last_fired_at=now, updated_at=func.now()),
        )
    await outbox.add_events(conn, queued)
    return queued


async def seconds_to_next(db: Executor) -> float | None:
    """Seconds until the earliest next fire time (negative when one is due); None: none."""
    due_in = await sql.fetchval(
        db, select(func.extract("epoch", func.min(schedules.c.next_fire_at) - func.now()))
    )
    return None if due_in is None else float(due_in)
