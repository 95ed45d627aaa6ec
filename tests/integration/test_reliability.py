"""The reliability promises of CONTRACT §5 with the worker in this process, on real PostgreSQL,
Redis and SMTP: a run's failure is its own, the assignee's email is retried like any email,
runs a dead worker left running are picked up again, delivery counts are exact, due times come
from the database's clock, and the dead-letter stream is bounded."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import SettingsFactory
from tests.integration.test_waiting_runs import approval_definition
from tests.support.examples import EXAMPLE_WORKFLOW, unique_email
from tests.support.flows import (
    create_workflow,
    pending_count,
    publish_all,
    run_rows,
    run_worker_until_drained,
    running_worker,
    submit,
)
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from workflow_core.actions import registry
from workflow_core.actions.registry import ActionType
from workflow_core.adapters import dead_letter_stream, streams
from workflow_core.adapters.streams import Entry, StreamKeys
from workflow_core.ids import run_id_for
from workflow_core.persistence import timers as timers_store
from workflow_core.persistence.pool import Pool
from workflow_core.persistence.tables import outbox, run_actions, runs, timers
from workflow_core.settings import Settings


def _wait_until(path: str) -> dict[str, Any]:
    return {
        "trigger": {
            "type": "form_submitted",
            "conditions": {"path": "template_id", "op": "==", "value": "form_submitted"},
        },
        "initial_step_id": "pause",
        "steps": [{"id": "pause", "type": "wait", "config": {"until_path": path}}],
    }


async def _statuses(engine: AsyncEngine) -> dict[Any, tuple[str, str | None]]:
    return {run.workflow_id: (run.status, run.error) for run in await run_rows(engine)}


async def test_a_timestamp_out_of_range_fails_its_run_and_the_other_workflow_goes_on(
    engine: AsyncEngine,
    settings: Settings,
    smtp: SmtpServer,
    redis: aioredis.Redis,
    keys: StreamKeys,
) -> None:
    """`9999-12-31T23:59:59-14:00` has no UTC datetime: it once raised OverflowError, the
    event was redelivered and dead-lettered, and the unrelated email was never sent."""
    waiting = await create_workflow(engine, _wait_until("data.appointment"))
    emailing = await create_workflow(engine)
    email = unique_email()
    await submit(engine, {"email": email, "appointment": "9999-12-31T23:59:59-14:00"})
    await publish_all(engine, settings)

    worker = await run_worker_until_drained(settings)

    statuses = await _statuses(engine)
    assert statuses[emailing] == ("completed", None)
    assert statuses[waiting][0] == "failed" and "data.appointment" in str(statuses[waiting][1])
    assert len(smtp.to(email)) == 1
    assert worker.stats.dead_lettered == 0 and await redis.xlen(keys.dead) == 0
    assert await pending_count(redis, keys) == 0


async def _explode(*_: Any) -> dict[str, Any]:
    raise RuntimeError("a bug in an action")


@pytest.fixture
def exploding_action() -> Iterator[str]:
    """An action type whose executor raises what no action should: a bug, not ActionFailed."""
    name = "explode_for_test"
    registry.REGISTRY[name] = ActionType(
        name, registry.REGISTRY["create_ticket"].config, _explode, lambda *_: {}
    )
    yield name
    del registry.REGISTRY[name]


async def test_an_unexpected_error_in_one_run_fails_that_run_only(
    engine: AsyncEngine,
    settings: Settings,
    smtp: SmtpServer,
    redis: aioredis.Redis,
    keys: StreamKeys,
    exploding_action: str,
) -> None:
    broken_definition = copy.deepcopy(EXAMPLE_WORKFLOW["definition"])
    broken_definition["steps"][0]["actions"] = [
        {"type": exploding_action, "config": {"subject": "x"}}
    ]
    broken = await create_workflow(engine, broken_definition)
    emailing = await create_workflow(engine)
    email = unique_email()
    await submit(engine, {"email": email})
    await publish_all(engine, settings)

    worker = await run_worker_until_drained(settings)

    statuses = await _statuses(engine)
    assert statuses[emailing] == ("completed", None)
    assert statuses[broken] == ("failed", "RuntimeError: a bug in an action")
    assert len(smtp.to(email)) == 1
    assert worker.stats.failed == 0 and await redis.xlen(keys.dead) == 0
    assert await pending_count(redis, keys) == 0  # acknowledged, not redelivered


async def test_the_assignee_email_is_retried_after_a_passing_smtp_failure(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    """It was best effort once: a 451 dropped it. It goes through the ledger and the retry
    policy now, while the task stays open."""
    manager = unique_email()
    await create_workflow(engine, approval_definition(assignee_email=manager))
    smtp.behaviour.refuse_data = "451 4.3.0 try again later"
    await submit(engine, {"email": unique_email(), "name": "Ada"}, template_id="approval")
    await publish_all(engine, settings)

    async with running_worker(settings):

        async def refused_twice() -> bool:
            async with engine.connect() as conn:
                query = select(func.count()).where(run_actions.c.status == "retrying")
                return int((await conn.execute(query)).scalar_one()) >= 2

        await eventually(refused_twice, what="two refused attempts")
        smtp.behaviour.refuse_data = None
        [mail] = await eventually(lambda: smtp.to(manager), what="the assignee's email")
    assert mail.message["Subject"].startswith("Task for you: Review Ada")
    [run] = await run_rows(engine)
    assert run.status == "waiting"  # for the task, as before


async def test_a_run_left_running_by_a_dead_worker_is_picked_up_by_the_sweep(
    engine: AsyncEngine,
    make_settings: SettingsFactory,
    smtp: SmtpServer,
    redis: aioredis.Redis,
    keys: StreamKeys,
) -> None:
    """A worker created the run (the event is taken) and died; Redis then lost the entry, so
    no reclaim will come. The sweep sees a running run whose owner has no heartbeat and wakes
    it: the email goes out once."""
    settings = make_settings(event_reconcile_seconds=1)
    workflow_id = await create_workflow(engine)
    email = unique_email()
    _, event_id = await submit(engine, {"email": email})
    await publish_all(engine, settings)
    smtp.behaviour.refuse_rcpt = "550 5.1.1 not now"
    await run_worker_until_drained(settings)  # the run is created, its email refused
    smtp.behaviour.refuse_rcpt = None
    quiet = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, 5)
    async with engine.begin() as conn:  # as a worker that died mid-step would have left it
        await conn.execute(
            update(runs)
            .where(runs.c.id == run_id_for(event_id, workflow_id))
            .values(status="running", error=None, owner="died/0", updated_at=quiet)
        )
    await redis.delete(keys.stream)  # and Redis lost everything

    async with running_worker(settings):
        await eventually(lambda: smtp.to(email), timeout=30, what="the email")
        await eventually(lambda: _status(engine, "completed"), what="the run completed")
    assert len(smtp.to(email)) == 1
    async with engine.connect() as conn:
        taken = (await conn.execute(select(outbox.c.taken_at))).scalars().all()
    assert None not in taken  # the recover event too


async def _status(engine: AsyncEngine, status: str) -> bool:
    return [run.status for run in await run_rows(engine)] == [status]


async def test_delivery_counts_are_exact_whatever_else_is_pending(
    redis: aioredis.Redis, keys: StreamKeys
) -> None:
    """A range capped at `len*4` rows once reported 1 delivery for an entry read 8 times."""
    await redis.xgroup_create(keys.stream, keys.group, id="0", mkstream=True)
    ids = [await redis.xadd(keys.stream, {"n": str(n)}) for n in range(40)]
    await redis.xreadgroup(keys.group, "a", {keys.stream: ">"}, count=100)
    for _ in range(7):  # the last entry delivered 7 more times
        await redis.xclaim(keys.stream, keys.group, "b", 0, [ids[-1]])
    counts = await streams.delivery_counts(redis, keys, [ids[0], ids[-1]])
    assert counts == {ids[0]: 1, ids[-1]: 8}


async def test_the_dead_letter_stream_is_capped(redis: aioredis.Redis, keys: StreamKeys) -> None:
    await redis.xgroup_create(keys.stream, keys.group, id="0", mkstream=True)
    for n in range(400):
        entry = Entry(await redis.xadd(keys.stream, {"n": str(n)}), {"n": str(n)}, 6)
        await dead_letter_stream.move_to_dead_letters(
            redis, keys, entry, "poison", "c", max_length=50
        )
    assert 50 <= await redis.xlen(keys.dead) < 200  # trimmed by whole blocks (MAXLEN ~)


async def test_a_wait_is_due_by_the_database_clock(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    """Due times are counted by PostgreSQL's clock when the timer is stored, never by a
    worker's (whose clock may be off)."""
    definition = copy.deepcopy(EXAMPLE_WORKFLOW["definition"])
    definition["steps"][0] = {"id": "step1", "type": "wait", "config": {"for": "PT1H"}}
    await create_workflow(engine, definition)
    await submit(engine, {"email": unique_email()})
    await publish_all(engine, settings)

    await run_worker_until_drained(settings)

    async with engine.connect() as conn:
        lag = (
            await conn.execute(select(func.extract("epoch", timers.c.due_at - timers.c.created_at)))
        ).scalar_one()
    assert abs(float(lag) - 3600) < 1


async def test_a_timer_with_an_unreadable_payload_does_not_stall_the_others(
    engine: AsyncEngine, settings: Settings, pool: Pool, smtp: SmtpServer
) -> None:
    """A timer row whose payload is not an object, or names the resume event's own fields
    (a bug, or a hand-edited row), is fired without it: the timers due beside it fire too."""
    definition = copy.deepcopy(EXAMPLE_WORKFLOW["definition"])
    definition["steps"][0] = {"id": "step1", "type": "wait", "config": {"for": "PT1H"}}
    await create_workflow(engine, definition)
    await submit(engine, {"email": unique_email()})
    await publish_all(engine, settings)
    await run_worker_until_drained(settings)
    run_id = await pool.fetchval("SELECT run_id FROM timers")
    for payload in ("[1]", '{"cause": "forged", "attempt": 2}', '{"attempt": 3}'):
        await pool.execute(
            "INSERT INTO timers (id, run_id, kind, due_at, payload) "
            "VALUES (gen_random_uuid(), $1, 'retry', now() - interval '1 second', $2::jsonb)",
            run_id,
            payload,
        )

    async with pool.acquire() as conn, conn.transaction():
        fired = await timers_store.fire_due(conn, 10)
    assert len(fired) == 3
    resumes = await pool.fetch(
        "SELECT payload FROM outbox WHERE payload->>'event_type' = 'run.resume'"
    )
    details = sorted((r["payload"]["cause"], r["payload"].get("attempt", 0)) for r in resumes)
    assert details == [("retry", 0), ("retry", 2), ("retry", 3)]
