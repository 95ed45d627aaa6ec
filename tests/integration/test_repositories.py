"""Repositories on real PostgreSQL: workflows and versions, runs and checkpoints, the effect
ledger, tickets and tasks records."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from uuid import UUID

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.examples import EXAMPLE_WORKFLOW
from tests.support.flows import create_workflow, submit
from workflow_core.actions.base import ActionCall, EffectAlreadyClaimed
from workflow_core.errors import EffectBusy
from workflow_core.ids import effect_key, new_id
from workflow_core.persistence import effects, runs, workflows
from workflow_core.persistence.effects import DbEffectLedger
from workflow_core.persistence.pg import Pool
from workflow_core.persistence.runs import Journal, RunRecord, StaleRun


async def test_workflow_versions_and_deactivation(engine: AsyncEngine) -> None:
    definition = EXAMPLE_WORKFLOW["definition"]
    async with engine.begin() as conn:
        created = await workflows.create(conn, name="w", org_id="org_1", definition=definition)
        changed = {**definition, "initial_step_id": "step1"}
        second = await workflows.add_version(conn, created.id, name="w2", definition=changed)
    assert second is not None and second.version == 2 and second.name == "w2"
    async with engine.begin() as conn:
        first = await workflows.get_version(conn, created.id, 1)
        assert first is not None and first.name == "w" and first.version == 1
        assert [w.id for w in await workflows.active(conn)] == [created.id]
        assert await workflows.deactivate(conn, created.id)
        assert await workflows.active(conn) == []
        assert (await workflows.get(conn, created.id)).active is False  # type: ignore[union-attr]
        assert await workflows.add_version(conn, new_id(), name="x", definition=definition) is None
        assert not await workflows.deactivate(conn, new_id())


async def _run(engine: AsyncEngine) -> RunRecord:
    workflow_id = await create_workflow(engine)
    submission_id, event_id = await submit(engine, {"email": "a@b.c"})
    return RunRecord(
        id=new_id(),
        workflow_id=workflow_id,
        workflow_version=1,
        submission_id=submission_id,
        event_id=event_id,
        org_id="org_123",
        status=runs.RUNNING,
        current_step_id="step1",
        step_seq=1,
        context={"a": 1},
    )


async def test_a_run_is_created_once_per_event_and_workflow(
    engine: AsyncEngine, pool: Pool
) -> None:
    record = await _run(engine)
    first = await runs.insert_if_absent(pool, record, reserve=("r1",), owner="worker-a/1")
    again = await runs.insert_if_absent(
        pool, replace(record, context={"b": 2}), reserve=("r1",), owner="worker-b/1"
    )
    assert first.created and not again.created
    assert again.run.context == {"a": 1} and again.run.revision == first.run.revision == 0
    # The reservations come with the new run only, held by the worker that created it.
    assert first.held == {"r1"} and again.held == frozenset()
    async with pool.acquire() as conn:
        held = await conn.fetch("SELECT state, owner FROM effects WHERE run_id = $1", record.id)
    assert [(row["state"], row["owner"]) for row in held] == [(effects.RESERVED, "worker-a/1")]


async def test_a_reservation_taken_with_the_run_locks_out_another_worker(
    engine: AsyncEngine, pool: Pool
) -> None:
    record = await _run(engine)
    key = effect_key(record.id, 1, 0)
    await runs.insert_if_absent(pool, record, reserve=(key,), owner="worker-a/1")
    call = replace(_call(record.id), key=key)
    with pytest.raises(EffectBusy):
        await DbEffectLedger(pool, owner="worker-b/1", stale_after=60).reserve(call)
    await DbEffectLedger(pool, owner="worker-a/1", stale_after=60).release(key)
    await DbEffectLedger(pool, owner="worker-b/1", stale_after=60).reserve(call)


async def test_checkpoint_writes_everything_or_nothing_and_refuses_a_stale_run(
    engine: AsyncEngine, pool: Pool
) -> None:
    record = await _run(engine)
    run = (await runs.insert_if_absent(pool, record)).run
    journal = Journal(
        effects_done=[
            {"key": "k1", "run_id": run.id, "state": effects.DONE, "result": {"ok": True}}
        ]
    )
    moved = await runs.checkpoint(pool, replace(run, status=runs.COMPLETED), journal)
    assert moved.revision == 1

    late = Journal(
        effects_done=[{"key": "k2", "run_id": run.id, "state": effects.DONE, "result": {}}]
    )
    with pytest.raises(StaleRun):
        await runs.checkpoint(pool, replace(run, status=runs.FAILED), late)
    async with engine.connect() as conn:
        stored = await runs.get(conn, run.id)
        ledger = await effects.for_run(conn, run.id)
    assert stored is not None and stored.status == runs.COMPLETED and stored.finished_at
    assert set(ledger) == {"k1"}


def _call(key_run: UUID | None = None) -> ActionCall:
    run_id = key_run or new_id()
    return ActionCall(
        run_id=run_id,
        workflow_id=new_id(),
        org_id=None,
        submission_id=None,
        step_id="s",
        step_seq=1,
        index=0,
        attempt=1,
        key=effect_key(run_id, 1, 0),
        context={},
    )


async def test_an_effect_is_reserved_by_one_owner_and_handed_over_once(pool: Pool) -> None:
    call = _call()
    mine = DbEffectLedger(pool, owner="worker-a/1", stale_after=60)
    theirs = DbEffectLedger(pool, owner="worker-b/1", stale_after=60)
    await mine.reserve(call)
    await mine.reserve(call)  # the same owner again (a retry in the same process)
    with pytest.raises(EffectBusy) as busy:
        await theirs.reserve(call)
    assert 59 < (busy.value.retry_after or 0) <= 61
    await (await mine.start_hand_over(call))
    with pytest.raises(EffectAlreadyClaimed):
        await theirs.reserve(call)
    await mine.release(call.key)  # refused outright after all: nothing was delivered
    await theirs.reserve(call)


async def test_hand_overs_started_together_share_one_record_and_all_count(pool: Pool) -> None:
    calls = [_call() for _ in range(3)]
    mine = DbEffectLedger(pool, owner="worker-a/1", stale_after=60)
    for call in calls:
        await mine.reserve(call)
    records = await asyncio.gather(*(mine.start_hand_over(call) for call in calls))
    await asyncio.gather(*records)
    async with pool.acquire() as conn:
        states = await conn.fetch(
            "SELECT state FROM effects WHERE key = ANY($1::text[])", [c.key for c in calls]
        )
    assert [row["state"] for row in states] == [effects.COMMITTING] * 3
    theirs = DbEffectLedger(pool, owner="worker-b/1", stale_after=0)
    for call in calls:
        with pytest.raises(EffectAlreadyClaimed):
            await theirs.reserve(call)


async def test_a_reservation_of_an_owner_that_is_gone_is_taken_over_once_stale(pool: Pool) -> None:
    call = _call()
    await DbEffectLedger(pool, owner="died/1", stale_after=60).reserve(call)
    await DbEffectLedger(pool, owner="restarted/2", stale_after=0).reserve(call)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT owner FROM effects WHERE key = $1", call.key) == (
            "restarted/2"
        )
