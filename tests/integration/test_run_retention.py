"""RUN_RETENTION_DAYS: the worker's housekeeping purges finished runs older than that with what
only they use, in bounded batches, and leaves everything else alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.worker.housekeeping import purge_round
from tests.conftest import SettingsFactory
from tests.support.flows import create_workflow, running_worker, submit
from tests.support.waiting import eventually
from workflow_core import metrics
from workflow_core.ids import new_id
from workflow_core.persistence.pool import Pool, create_pool
from workflow_core.persistence.tables import (
    effects,
    run_actions,
    run_steps,
    runs,
    submissions,
    tasks,
    tickets,
    timers,
)
from workflow_core.settings import Settings

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[Pool]:
    created = await create_pool(settings, application_name="flowline-tests", size=2)
    yield created
    await created.close()


async def make_run(
    engine: AsyncEngine,
    workflow_id: UUID,
    submission_id: UUID,
    *,
    status: str = "completed",
    finished_at: datetime | None = OLD,
) -> UUID:
    run_id = new_id()
    async with engine.begin() as conn:
        await conn.execute(
            insert(runs).values(
                id=run_id,
                workflow_id=workflow_id,
                workflow_version=1,
                submission_id=submission_id,
                event_id=new_id(),
                org_id="org_123",
                status=status,
                current_step_id="s",
                step_seq=1,
                context={},
                finished_at=finished_at,
            )
        )
        await conn.execute(
            insert(run_steps).values(
                run_id=run_id,
                seq=1,
                step_id="s",
                step_type="auto_action",
                status="completed",
                entered_at=OLD,
            )
        )
        await conn.execute(
            insert(run_actions).values(
                run_id=run_id,
                step_seq=1,
                step_id="s",
                action_index=0,
                action_type="send_email",
                attempt=1,
                status="succeeded",
                started_at=OLD,
            )
        )
        await conn.execute(insert(effects).values(key=f"{run_id}/1/0", run_id=run_id, state="done"))
        for kind in ("human", "todo"):
            await conn.execute(
                insert(tasks).values(
                    id=new_id(), kind=kind, run_id=run_id, title="t", status="completed"
                )
            )
        await conn.execute(
            insert(timers).values(id=new_id(), run_id=run_id, kind="wait", due_at=OLD, payload={})
        )
        await conn.execute(
            insert(tickets).values(
                id=new_id(),
                run_id=run_id,
                subject="kept",
                status="open",
                priority="normal",
                fields={},
            )
        )
    return run_id


async def counts(engine: AsyncEngine, run_id: UUID) -> dict[str, int]:
    found = {}
    async with engine.connect() as conn:
        for table in (runs, run_steps, run_actions, effects, tasks, timers, tickets):
            column = table.c.id if table is runs else table.c.run_id
            query = select(func.count()).where(column == run_id)
            found[table.name] = int((await conn.execute(query)).scalar_one())
    return found


async def exists(engine: AsyncEngine, table: Any, row_id: UUID) -> bool:
    async with engine.connect() as conn:
        query = select(func.count()).where(table.c.id == row_id)
        return bool((await conn.execute(query)).scalar_one())


async def test_old_finished_runs_are_purged_in_batches_and_nothing_else(
    engine: AsyncEngine, pool: Pool
) -> None:
    workflow_id = await create_workflow(engine)
    old_form, _ = await submit(engine, {"n": 1})
    shared_form, _ = await submit(engine, {"n": 2})
    old = [
        await make_run(engine, workflow_id, old_form, status=status)
        for status in ("completed", "failed", "cancelled")
    ]
    old_of_shared = await make_run(engine, workflow_id, shared_form)
    fresh = await make_run(engine, workflow_id, shared_form, finished_at=NOW - timedelta(days=1))
    old_but_waiting = await make_run(
        engine, workflow_id, shared_form, status="waiting", finished_at=None
    )
    purged_before = metrics.RUNS_PURGED._value.get()

    first = await purge_round(pool, retention_days=30, batch=1, batches=2)
    rest = await purge_round(pool, retention_days=30, batch=1)

    assert (first.runs, rest.runs) == (2, 2)  # bounded: two batches of one, then the others
    assert first.submissions + rest.submissions == 1  # the form only old runs used
    assert metrics.RUNS_PURGED._value.get() - purged_before == 4
    for run_id in [*old, old_of_shared]:
        assert await counts(engine, run_id) == {
            "runs": 0,
            "run_steps": 0,
            "run_actions": 0,
            "effects": 0,
            "tasks": 0,
            "timers": 0,
            "tickets": 1,  # the organisation's records stay
        }
    for run_id in (fresh, old_but_waiting):
        assert await counts(engine, run_id) == {
            "runs": 1,
            "run_steps": 1,
            "run_actions": 1,
            "effects": 1,
            "tasks": 2,
            "timers": 1,
            "tickets": 1,
        }
    assert not await exists(engine, submissions, old_form)
    assert await exists(engine, submissions, shared_form)  # a kept run still uses it
    async with engine.connect() as conn:  # to-do items stay, without their run
        todos = select(func.count()).where(tasks.c.kind == "todo", tasks.c.run_id.is_(None))
        assert (await conn.execute(todos)).scalar_one() == 4
    assert (await purge_round(pool, retention_days=30)).runs == 0


async def test_a_worker_with_retention_set_purges_on_its_own(
    make_settings: SettingsFactory, engine: AsyncEngine
) -> None:
    workflow_id = await create_workflow(engine)
    form, _ = await submit(engine, {"n": 1})
    old = await make_run(engine, workflow_id, form)
    settings = make_settings(run_retention_days=30, housekeeping_interval_seconds=0.1)

    async with running_worker(settings):

        async def gone() -> bool:
            return (await counts(engine, old))["runs"] == 0

        await eventually(gone, what="the worker to purge the old run")
    assert not await exists(engine, submissions, form)
