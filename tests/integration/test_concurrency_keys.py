"""Concurrency keys and throttles on real PostgreSQL (and, for the throttle, Redis and SMTP with
the worker in this process): slots are counted from the runs' rows under a lock, so admissions
racing on two pools never let in more than the limit, in the order their forms were submitted."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.worker.store import RunStore
from tests.support.examples import unique_email
from tests.support.flows import create_workflow, publish_all, run_rows, running_worker, submit
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from workflow_core.engine.gates import Gate, GateKeys, stored_key
from workflow_core.persistence import control, gates, runs
from workflow_core.persistence.pool import Pool, create_pool
from workflow_core.persistence.tables import outbox, timers
from workflow_core.settings import Settings
from workflow_core.statuses import RunStatus

KEY = stored_key("org_a", "ada@example.com")
ONE_SLOT = Gate(concurrency_limit=2, throttle_limit=None, per=timedelta(0))


async def queue_runs(pool: Pool, workflow_id: UUID, count: int, key: str = KEY) -> list[UUID]:
    """`count` queued runs of `key`, submitted one after another (their order is the queue's)."""
    made = []
    for _ in range(count):
        run_id = uuid4()
        record = runs.RunRecord(
            id=run_id,
            workflow_id=workflow_id,
            workflow_version=1,
            submission_id=None,
            event_id=uuid4(),
            org_id="org_a",
            status=RunStatus.WAITING,
            current_step_id="step1",
            step_seq=1,
            context={},
            concurrency_key=key,
            queued_for="concurrency",
            queued_at=datetime.now(UTC),
        )
        await runs.start_events(
            pool, [runs.EventStart(record.event_id, (runs.NewRun(record),))], owner="test"
        )
        made.append(run_id)
    return made


async def admit_once(pool: Pool, key: str = KEY, gate: Gate = ONE_SLOT, **where: Any) -> set[UUID]:
    async with pool.acquire() as conn, conn.transaction():
        admitted = await gates.admit(
            conn,
            where["workflow_id"],
            "org_a",
            GateKeys(key, None),
            gate,
            me=None,
            owner="test",
        )
    return set(admitted)


async def statuses(pool: Pool, ids: list[UUID]) -> list[str]:
    rows = await pool.fetch("SELECT id, status FROM runs WHERE id = ANY($1::uuid[])", ids)
    by_id = {row["id"]: row["status"] for row in rows}
    return [by_id[run_id] for run_id in ids]


async def test_racing_admissions_on_two_pools_never_exceed_the_limit_and_keep_the_order(
    engine: AsyncEngine, settings: Settings, pool: Pool
) -> None:
    workflow_id = await create_workflow(engine)
    queued = await queue_runs(pool, workflow_id, 6)
    other = await create_pool(settings, application_name="flowline-tests-b", size=4)
    try:
        rounds = await asyncio.gather(
            *(admit_once(p, workflow_id=workflow_id) for p in (pool, other) * 6)
        )
        admitted = set().union(*rounds)
        assert admitted == set(queued[:2])  # the limit, and the oldest first
        assert sum(len(r) for r in rounds) == 2  # each run let in once
        assert await statuses(pool, queued) == ["running"] * 2 + ["waiting"] * 4

        # the two let in are woken through the outbox (no worker here drives them)
        woken = await pool.fetch("SELECT payload FROM outbox WHERE event_type = 'run.resume'")
        assert sorted(UUID(w["payload"]["run_id"]) for w in woken) == sorted(queued[:2])
        assert {w["payload"]["cause"] for w in woken} == {"admitted"}

        # a run waiting on a timer still holds its slot; one that ended frees it
        await pool.execute("UPDATE runs SET status = 'waiting' WHERE id = $1", queued[0])
        await pool.execute("UPDATE runs SET status = 'completed' WHERE id = $1", queued[1])
        rounds = await asyncio.gather(
            *(admit_once(p, workflow_id=workflow_id) for p in (pool, other) * 4)
        )
        assert set().union(*rounds) == {queued[2]}
        assert await statuses(pool, queued[2:]) == ["running", "waiting", "waiting", "waiting"]
    finally:
        await other.close()


async def test_keys_and_organisations_have_queues_of_their_own(
    engine: AsyncEngine, pool: Pool
) -> None:
    workflow_id = await create_workflow(engine)
    one = Gate(concurrency_limit=1, throttle_limit=None, per=timedelta(0))
    first = await queue_runs(pool, workflow_id, 2)
    other_key = stored_key("org_a", "bob@example.com")
    second = await queue_runs(pool, workflow_id, 1, other_key)
    assert await admit_once(pool, gate=one, workflow_id=workflow_id) == {first[0]}
    assert await admit_once(pool, other_key, gate=one, workflow_id=workflow_id) == {second[0]}
    # the same text in another organisation is another key
    foreign = await queue_runs(pool, workflow_id, 1, stored_key("org_b", "ada@example.com"))
    assert foreign[0] not in await admit_once(pool, gate=one, workflow_id=workflow_id)
    assert await statuses(pool, [first[1], foreign[0]]) == ["waiting", "waiting"]


async def test_a_queue_nothing_moved_is_found_by_the_sweep(engine: AsyncEngine, pool: Pool) -> None:
    workflow_id = await create_workflow(engine)
    queued = await queue_runs(pool, workflow_id, 3)
    await pool.execute("UPDATE runs SET updated_at = now() - interval '1 hour'")
    async with pool.acquire() as conn:
        heads = await gates.stuck_queues(conn, quiet_for=60, limit=10)
        assert heads == [queued[0]]  # one wake-up per queue: its first run
        assert await gates.stuck_queues(conn, quiet_for=60, limit=10) == []  # touched


def throttled_definition(template_id: str) -> dict[str, Any]:
    return {
        "trigger": {
            "type": "form_submitted",
            "conditions": {"path": "template_id", "op": "==", "value": template_id},
        },
        "initial_step_id": "notify",
        "throttle": {"key": "{org_id}", "per": "PT1S", "limit": 1},
        "steps": [
            {
                "id": "notify",
                "type": "auto_action",
                "actions": [
                    {
                        "type": "send_email",
                        "config": {"to_path": "data.email", "subject": "hi", "body": "b"},
                    }
                ],
            }
        ],
    }


async def test_a_throttled_run_is_delayed_to_its_slot_not_dropped(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    await create_workflow(engine, throttled_definition("throttled"))
    emails = [unique_email() for _ in range(3)]
    for email in emails:
        await submit(engine, {"email": email}, template_id="throttled")
    await publish_all(engine, settings)
    async with running_worker(settings):
        for email in emails:
            await eventually(lambda e=email: smtp.to(e), what=f"the email to {email}")
    rows = await run_rows(engine)
    assert [row.status for row in rows] == ["completed"] * 3
    starts = sorted(row.admitted_at for row in rows)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(gap >= timedelta(seconds=1) for gap in gaps), gaps
    async with engine.connect() as conn:
        kinds = list(await conn.execute(select(timers.c.kind, timers.c.fired_at)))
        resumed = list(await conn.execute(select(outbox.c.payload)))
    assert [kind for kind, _ in kinds] == ["admit", "admit"]  # a wake-up for each delayed run
    assert all(fired is not None for _, fired in kinds)
    assert sum(1 for (p,) in resumed if p.get("cause") == "admit") == 2


def one_at_a_time(template_id: str, first_step: dict[str, Any]) -> dict[str, Any]:
    return {
        "trigger": {
            "type": "form_submitted",
            "conditions": {"path": "template_id", "op": "==", "value": template_id},
        },
        "concurrency": {"key": "{data.email}", "limit": 1},
        "initial_step_id": first_step["id"],
        "steps": [first_step],
    }


async def test_a_failed_run_frees_its_slot(engine: AsyncEngine, settings: Settings) -> None:
    """A wait for a timestamp the form lacks fails each run: the queue goes on all the same."""
    broken = {"id": "pause", "type": "wait", "config": {"until_path": "data.when"}}
    await create_workflow(engine, one_at_a_time("broken", broken))
    email = unique_email()
    for _ in range(3):
        await submit(engine, {"email": email}, template_id="broken")
    await publish_all(engine, settings)

    async def all_failed() -> bool:
        return [row.status for row in await run_rows(engine)] == ["failed"] * 3

    async with running_worker(settings):
        await eventually(all_failed, what="the three runs failed one after another")
    rows = await run_rows(engine)
    assert all(row.queued_for is None and row.admitted_at is not None for row in rows)


async def test_a_cancelled_run_frees_its_slot_at_once(
    engine: AsyncEngine, settings: Settings, pool: Pool
) -> None:
    """The run holding the key's only slot waits an hour; it is cancelled: the run queued
    behind it is let in within seconds, not at the reconcile sweep's next look (60 s)."""
    pause = {"id": "pause", "type": "wait", "config": {"for": "PT1H"}}
    await create_workflow(engine, one_at_a_time("held", pause))
    email = unique_email()
    for _ in range(2):
        await submit(engine, {"email": email}, template_id="held")
    await publish_all(engine, settings)

    async def queued_ones() -> list[str | None]:
        return sorted((row.queued_for or "-") for row in await run_rows(engine))

    async with running_worker(settings):
        await eventually(lambda: _is(queued_ones(), ["-", "concurrency"]), what="one queued")
        holder = await pool.fetchval("SELECT id FROM runs WHERE queued_for IS NULL")
        async with pool.acquire() as conn, conn.transaction():
            run = await runs.get(conn, holder, for_update=True)
            assert run is not None
            await control.cancel(conn, run, "no longer needed")
        await publish_all(engine, settings)
        await eventually(lambda: _is(queued_ones(), ["-", "-"]), timeout=10, what="let in")
    assert sorted(row.status for row in await run_rows(engine)) == ["cancelled", "waiting"]


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_a_queue_whose_wake_up_was_lost_drains_after_the_sweep(
    engine: AsyncEngine, make_settings: Any, smtp: SmtpServer, pool: Pool
) -> None:
    """Runs left queued with nothing active (their worker died between one run's end and the
    admission of the next): the reconcile sweep wakes the queue, which runs in order."""
    settings = make_settings(event_reconcile_seconds=1)
    reply = {
        "id": "reply",
        "type": "auto_action",
        "actions": [
            {
                "type": "send_email",
                "config": {"to_path": "data.email", "subject": "{data.n}", "body": "b"},
            }
        ],
    }
    workflow_id = await create_workflow(engine, one_at_a_time("stuck", reply))
    email = unique_email()
    queued = await queue_runs(pool, workflow_id, 3, stored_key("org_a", email))
    for n, run_id in enumerate(queued, 1):
        context = {"data": {"email": email, "n": n}, "org_id": "org_a", "steps": {}}
        await pool.execute(
            "UPDATE runs SET context = $2::jsonb, current_step_id = 'reply',"
            " updated_at = now() - interval '1 hour' WHERE id = $1",
            run_id,
            json.dumps(context),
        )
    async with running_worker(settings):
        await eventually(lambda: len(smtp.to(email)) == 3, what="the three emails")
    assert [m.message["Subject"] for m in smtp.to(email)] == ["1", "2", "3"]
    assert await statuses(pool, queued) == ["completed"] * 3


async def test_only_workflows_with_limits_take_the_gate(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer, monkeypatch: Any
) -> None:
    """The original example pays nothing for the feature: no admission, no queue columns. A run
    of a workflow with limits takes two admissions: to start, and to let the next in."""
    admissions: list[UUID] = []
    admit = RunStore.admit

    async def counted(store: RunStore, run: runs.RunRecord, gate: Gate, *, me: bool) -> Any:
        admissions.append(run.id)
        return await admit(store, run, gate, me=me)

    monkeypatch.setattr(RunStore, "admit", counted)
    await create_workflow(engine)  # the original example, for template form_submitted
    reply = {
        "id": "reply",
        "type": "auto_action",
        "actions": [
            {"type": "send_email", "config": {"to_path": "data.email", "subject": "s", "body": "b"}}
        ],
    }
    await create_workflow(engine, one_at_a_time("gated", reply))
    plain, gated = unique_email(), unique_email()
    await submit(engine, {"email": plain})
    await submit(engine, {"email": gated}, template_id="gated")
    await publish_all(engine, settings)
    async with running_worker(settings):
        await eventually(lambda: smtp.to(plain) and smtp.to(gated), what="both emails")
        await eventually(lambda: len(admissions) == 2, what="the gated run's end admission")
    rows = {row.context["data"]["email"]: row for row in await run_rows(engine)}
    assert (rows[plain].concurrency_key, rows[plain].queued_at, rows[plain].admitted_at) == (
        None,
        None,
        None,
    )
    assert admissions == [rows[gated].id, rows[gated].id]


async def test_two_workers_starting_one_key_at_once_never_run_more_than_the_limit(
    engine: AsyncEngine, make_settings: Any, smtp: SmtpServer, pool: Pool
) -> None:
    """Ten forms of one address, two workers taking them at once, limit 2: a sampler never
    sees more than two of them active, and every one runs."""
    pause = {"id": "pause", "type": "wait", "config": {"for": 0.3}}
    definition = one_at_a_time("pair", pause)
    definition["concurrency"]["limit"] = 2
    await create_workflow(engine, definition)
    email = unique_email()
    first, second = (make_settings(worker_consumer_name=name) for name in ("first", "second"))
    for _ in range(10):
        await submit(engine, {"email": email}, template_id="pair")
    await publish_all(engine, first)
    seen: list[int] = []

    async def sample() -> bool:
        counts = await pool.fetchrow(
            "SELECT count(*) FILTER (WHERE queued_for IS NULL AND status IN ('running', "
            "'waiting')) AS active, count(*) FILTER (WHERE status = 'completed') AS done "
            "FROM runs"
        )
        assert counts is not None
        seen.append(counts["active"])
        return bool(counts["done"] == 10)

    async with running_worker(first), running_worker(second):
        await eventually(sample, interval=0.01, timeout=30, what="the ten runs completed")
    assert max(seen) == 2, seen  # the limit was reached, and never passed
