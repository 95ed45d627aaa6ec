"""Schedules on real PostgreSQL: kept in step with their workflow, and each tick fired once by
schedulers racing in separate processes' pools."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import UUID

from services.worker.scheduler import ScheduleFirer
from workflow_core import events, metrics
from workflow_core.persistence import schedules, workflows
from workflow_core.persistence.pool import Pool, create_pool
from workflow_core.settings import Settings


def scheduled(cron: str = "0 9 * * MON-FRI", **trigger: Any) -> dict[str, Any]:
    return {
        "trigger": {"type": "schedule", "cron": cron, "timezone": "Europe/Berlin", **trigger},
        "initial_step_id": "only",
        "steps": [{"id": "only", "type": "auto_action"}],
    }


async def _create(pool: Pool, definition: dict[str, Any], org_id: str | None = "org_s") -> UUID:
    async with pool.acquire() as conn, conn.transaction():
        record = await workflows.create(conn, name="nightly", org_id=org_id, definition=definition)
    return record.id


async def _make_due(pool: Pool, workflow_id: UUID) -> None:
    await pool.execute(
        "UPDATE schedules SET next_fire_at = now() - interval '1 second' WHERE workflow_id = $1",
        workflow_id,
    )


async def _ticks_queued(pool: Pool, workflow_id: UUID) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT payload FROM outbox WHERE event_type = $1 AND payload->>'workflow_id' = $2",
        events.SCHEDULE,
        str(workflow_id),
    )
    return [row["payload"] for row in rows]


def _ticks_counted(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value("flowline_schedule_ticks_total", {"outcome": outcome})
    return value or 0.0


async def test_a_schedule_follows_its_workflow(pool: Pool) -> None:
    workflow_id = await _create(pool, scheduled())
    first = await schedules.get(pool, workflow_id)
    now = await pool.fetchval("SELECT now()")
    assert first is not None and first.version == 1 and first.org_id == "org_s"
    assert now < first.next_fire_at <= now + timedelta(days=4)
    assert first.next_fire_at.astimezone().minute == 0

    async with pool.acquire() as conn, conn.transaction():
        await workflows.add_version(conn, workflow_id, name="n", definition=scheduled())
    same = await schedules.get(pool, workflow_id)
    assert same is not None and same.version == 2 and same.next_fire_at == first.next_fire_at

    async with pool.acquire() as conn, conn.transaction():
        await workflows.add_version(conn, workflow_id, name="n", definition=scheduled("* * * * *"))
    changed = await schedules.get(pool, workflow_id)
    assert changed is not None and changed.next_fire_at <= now + timedelta(minutes=2)

    async with pool.acquire() as conn, conn.transaction():
        await workflows.deactivate(conn, workflow_id)
    assert await schedules.get(pool, workflow_id) is None
    async with pool.acquire() as conn, conn.transaction():
        await workflows.activate(conn, workflow_id)
    assert await schedules.get(pool, workflow_id) is not None

    form_trigger = {**scheduled(), "trigger": {"type": "form_submitted"}}
    async with pool.acquire() as conn, conn.transaction():
        await workflows.add_version(conn, workflow_id, name="n", definition=form_trigger)
    assert await schedules.get(pool, workflow_id) is None


async def test_two_schedulers_fire_a_due_tick_once(pool: Pool, settings: Settings) -> None:
    workflow_id = await _create(pool, scheduled(), org_id=None)
    other = await _create(pool, scheduled("0 0 1 1 *"))  # not due: never fires here
    pools = [
        await create_pool(settings, application_name=f"flowline-scheduler-{n}", size=2)
        for n in range(2)
    ]
    try:
        firers = [ScheduleFirer(each) for each in pools]
        for _ in range(5):
            await _make_due(pool, workflow_id)
            await asyncio.gather(*(firer.fire_due() for firer in firers for _ in range(3)))
    finally:
        for each in pools:
            await each.close()
    ticks = await _ticks_queued(pool, workflow_id)
    assert len(ticks) == 5, ticks
    assert sum(firer.fired for firer in firers) == 5
    assert {tick["org_id"] for tick in ticks} == {None}
    assert all(tick["data"]["timezone"] == "Europe/Berlin" for tick in ticks)
    assert await _ticks_queued(pool, other) == []
    after = await schedules.get(pool, workflow_id)
    assert after is not None and after.next_fire_at > await pool.fetchval("SELECT now()")


async def test_after_an_outage_catch_up_fires_each_missed_tick(pool: Pool) -> None:
    # Daily ticks at midnight UTC (the test does not race a tick unless it runs at midnight).
    once = await _create(pool, scheduled("0 0 * * *", timezone="UTC"))
    each = await _create(pool, scheduled("0 0 * * *", timezone="UTC", catch_up=True))
    await pool.execute(
        "UPDATE schedules SET next_fire_at = date_trunc('day', now()) - interval '5 days'"
    )
    before = {outcome: _ticks_counted(outcome) for outcome in ("fired", "skipped")}
    await ScheduleFirer(pool, catch_up_limit=3).fire_due()
    assert _ticks_counted("fired") - before["fired"] == 1 + 3
    assert _ticks_counted("skipped") - before["skipped"] == 5 + 3
    [single] = await _ticks_queued(pool, once)
    assert single["data"]["missed"] == 5
    caught_up = await _ticks_queued(pool, each)
    assert len(caught_up) == 3 and {tick["data"]["missed"] for tick in caught_up} == {3}
    assert len({tick["data"]["scheduled_for"] for tick in caught_up}) == 3


class _Crash(Exception):
    pass


async def test_a_scheduler_that_dies_mid_transaction_leaves_the_tick_to_another(
    pool: Pool,
) -> None:
    workflow_id = await _create(pool, scheduled())
    await _make_due(pool, workflow_id)
    due_at = (await schedules.get(pool, workflow_id)).next_fire_at  # type: ignore[union-attr]
    try:
        async with pool.acquire() as conn, conn.transaction():
            queued = await schedules.fire_due(conn, limit=10, catch_up_limit=10)
            assert len(queued) == 1
            raise _Crash  # the process dies before its commit
    except _Crash:
        pass
    assert await _ticks_queued(pool, workflow_id) == []
    still = await schedules.get(pool, workflow_id)
    assert still is not None and still.next_fire_at == due_at
    await ScheduleFirer(pool).fire_due()
    [tick] = await _ticks_queued(pool, workflow_id)
    assert tick["data"]["scheduled_for"] == due_at.isoformat()
