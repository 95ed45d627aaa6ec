"""Repositories on real PostgreSQL: workflows and versions, runs and checkpoints, the effect
ledger, tickets and tasks records."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.worker.heartbeat import Heartbeat
from tests.support.examples import EXAMPLE_WORKFLOW
from tests.support.flows import create_workflow, submit
from tests.support.waiting import eventually
from workflow_core.actions.base import ActionCall
from workflow_core.adapters import streams
from workflow_core.adapters.sent_spool import SentSpool
from workflow_core.adapters.streams import StreamKeys
from workflow_core.definitions import StepSpec
from workflow_core.errors import EffectBusy, Unavailable
from workflow_core.ids import effect_key, new_id
from workflow_core.persistence import effects, runs, workers, workflows
from workflow_core.persistence.checkpoints import checkpoint_many
from workflow_core.persistence.effects import DbEffectLedger
from workflow_core.persistence.journal import Journal
from workflow_core.persistence.pool import Pool, create_pool
from workflow_core.persistence.runs import RunRecord, StaleRun
from workflow_core.settings import Settings
from workflow_core.statuses import RunStatus


async def test_workflow_versions_and_deactivation(pool: Pool) -> None:
    definition = EXAMPLE_WORKFLOW["definition"]
    async with pool.acquire() as conn, conn.transaction():
        created = await workflows.create(conn, name="w", org_id="org_1", definition=definition)
        changed = {**definition, "initial_step_id": "step1"}
        second = await workflows.add_version(conn, created.id, name="w2", definition=changed)
    assert second is not None and second.version == 2 and second.name == "w2"
    async with pool.acquire() as conn, conn.transaction():
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
        status=RunStatus.RUNNING,
        current_step_id="step1",
        step_seq=1,
        context={"a": 1},
    )


async def test_a_run_is_created_once_per_event_and_workflow(
    engine: AsyncEngine, pool: Pool
) -> None:
    record = await _run(engine)
    [[first]] = await runs.start_events(pool, [_start(record, "r1")], owner="worker-a/1")
    [[again]] = await runs.start_events(
        pool, [_start(replace(record, context={"b": 2}), "r1")], owner="worker-b/1"
    )
    assert first.created and not again.created
    assert again.run.context == {"a": 1} and again.run.revision == first.run.revision == 0
    # The reservations come with the new run only, held by the worker that created it.
    assert first.held == {"r1"} and again.held == frozenset()
    async with pool.acquire() as conn:
        held = await conn.fetch("SELECT state, owner FROM effects WHERE run_id = $1", record.id)
        owner = await conn.fetchval("SELECT owner FROM runs WHERE id = $1", record.id)
    assert [(row["state"], row["owner"]) for row in held] == [(effects.RESERVED, "worker-a/1")]
    assert owner == "worker-a/1"


def _start(record: RunRecord, *reserve: str) -> runs.EventStart:
    return runs.EventStart(record.event_id, (runs.NewRun(record, reserve),))


async def _taken_at(pool: Pool, event_id: UUID) -> object:
    return await pool.fetchval("SELECT taken_at FROM outbox WHERE event_id = $1", event_id)


async def test_an_event_is_marked_taken_with_the_runs_it_starts_or_alone(
    engine: AsyncEngine, pool: Pool
) -> None:
    """PostgreSQL is the truth: an event is taken in the statement that creates its runs, and
    an event no workflow matched is taken all the same (else the sweep publishes it again)."""
    record = await _run(engine)
    _, lonely = await submit(engine, {"email": "nobody@example.com"}, template_id="no_workflow")
    assert await _taken_at(pool, record.event_id) is None

    await runs.start_events(pool, [_start(record), runs.EventStart(lonely)], owner="worker-a/1")

    assert await _taken_at(pool, record.event_id) is not None
    assert await _taken_at(pool, lonely) is not None


async def test_a_reservation_taken_with_the_run_locks_out_another_live_worker(
    engine: AsyncEngine, pool: Pool
) -> None:
    record = await _run(engine)
    key = effect_key(record.id, 1, 0)
    await workers.beat(pool, "worker-a/1", "a")
    await runs.start_events(pool, [_start(record, key)], owner="worker-a/1")
    call = replace(_call(record.id), key=key)
    theirs = await _live_ledger(pool, "worker-b/1")
    with pytest.raises(EffectBusy):
        await theirs.reserve(call)
    await DbEffectLedger(pool, owner="worker-a/1", dead_after=60).release(key)
    assert await theirs.reserve(call) is None


async def test_checkpoint_writes_everything_or_only_the_facts_of_a_stale_run(
    engine: AsyncEngine, pool: Pool
) -> None:
    """A run someone else moved on keeps its state, but what the stale writer did (an email
    sent: its effect) is recorded all the same: it happened."""
    record = await _run(engine)
    [[inserted]] = await runs.start_events(pool, [_start(record)], owner="w/1")
    run = inserted.run
    journal = Journal(
        effects_done=[
            {"key": "k1", "run_id": run.id, "state": effects.DONE, "result": {"ok": True}}
        ]
    )
    [moved] = await checkpoint_many(
        pool, [(replace(run, status=RunStatus.COMPLETED), journal)], owner="w/1"
    )
    assert isinstance(moved, RunRecord) and moved.revision == 1

    late = Journal(
        effects_done=[{"key": "k2", "run_id": run.id, "state": effects.DONE, "result": {}}]
    )
    late.step_entered(run.id, 1, _step(), datetime.now(UTC))
    [stale] = await checkpoint_many(
        pool, [(replace(run, status=RunStatus.FAILED), late)], owner="w/2"
    )
    assert isinstance(stale, StaleRun)
    stored = await runs.get(pool, run.id)
    ledger = await effects.for_run(pool, run.id)
    steps, _ = await runs.history(pool, run.id)
    assert stored is not None and stored.status == RunStatus.COMPLETED and stored.finished_at
    assert set(ledger) == {"k1", "k2"}
    assert steps == []  # the stale writer's view of the run is not written


def _step() -> StepSpec:
    return StepSpec(id="step1", type="auto_action")


async def _live_ledger(
    pool: Pool,
    owner: str,
    dead_after: float = 60,
    eager_pool: Pool | None = None,
    notes: streams.SentNotes | None = None,
    spool: Path | None = None,
) -> DbEffectLedger:
    """A ledger whose owner has been beating for longer than `dead_after` (it may take over
    the reservations of dead owners); `spool`: the directory of its local notes."""
    clock = [1000.0]
    ledger = DbEffectLedger(
        pool,
        owner=owner,
        dead_after=dead_after,
        eager_pool=eager_pool,
        notes=notes,
        spool=SentSpool(spool, owner) if spool else None,
        clock=lambda: clock[0],
    )
    await workers.beat(pool, owner, owner)
    ledger.heartbeat(True)
    clock[0] += dead_after
    return ledger


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


async def test_an_email_is_reserved_by_one_live_owner_and_done_once(pool: Pool) -> None:
    call = _call()
    mine = await _live_ledger(pool, "worker-a/1")
    theirs = await _live_ledger(pool, "worker-b/1")
    assert await mine.reserve(call) is None
    assert await mine.reserve(call) is None  # the same owner again (a retry in this process)
    with pytest.raises(EffectBusy) as busy:
        await theirs.reserve(call)
    assert 59 < (busy.value.retry_after or 0) <= 61  # until the holder would be dead
    await mine.release(call.key)  # refused before its 250: nothing was delivered
    assert await theirs.reserve(call) is None
    await pool.execute(
        "UPDATE effects SET state = 'done', result = $2 WHERE key = $1", call.key, '{"n": 1}'
    )
    assert await mine.reserve(call) == {"n": 1}  # sent (and recorded): never again


async def test_an_email_is_recorded_done_as_soon_as_it_is_sent(pool: Pool) -> None:
    call = _call()
    mine = await _live_ledger(pool, "worker-a/1")
    assert await mine.reserve(call) is None
    await mine.sent(call, {"message_id": "<m@x>"})
    theirs = await _live_ledger(pool, "worker-b/1")
    assert await theirs.reserve(call) == {"message_id": "<m@x>"}


async def test_an_email_sent_whose_record_failed_is_not_sent_again_by_its_process(
    pool: Pool, settings: Settings
) -> None:
    """A 250 was read, and its record failed (the database went away): when the run goes
    round again in this process, the email counts as sent."""
    call = _call()
    gone = await create_pool(settings, application_name="flowline-tests", size=1)
    await gone.close()
    mine = await _live_ledger(pool, "worker-a/1", eager_pool=gone)
    assert await mine.reserve(call) is None
    with pytest.raises(Unavailable):
        await mine.sent(call, {"message_id": "<m@x>"})
    assert await mine.reserve(call) == {"message_id": "<m@x>"}
    mine.recorded([call.key])  # the run's checkpoint wrote it later
    assert await mine.reserve(call) is None  # (here it did not: the row is still reserved)


async def test_a_250_the_database_could_not_take_is_noted_and_not_sent_again_by_another(
    pool: Pool, settings: Settings, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    """The 250 came while PostgreSQL was away, and the worker died before it could record it:
    the next worker, taking the dead owner's reservation over, finds the note and records the
    email done instead of sending it again."""
    call = _call()
    gone = await create_pool(settings, application_name="flowline-tests", size=1)
    await gone.close()
    notes = streams.SentNotes(redis, keys)
    dying = await _live_ledger(pool, "dying/1", eager_pool=gone, notes=notes)
    assert await dying.reserve(call) is None
    with pytest.raises(Unavailable):
        await dying.sent(call, {"message_id": "<m@x>"})
    await pool.execute("DELETE FROM workers WHERE owner = 'dying/1'")  # it died

    taking_over = await _live_ledger(pool, "next/1", notes=notes)
    assert await taking_over.reserve(call) == {"message_id": "<m@x>"}
    state = await pool.fetchval("SELECT state FROM effects WHERE key = $1", call.key)
    assert state == effects.DONE


async def _sent_in_a_cut_then_killed(
    pool: Pool, settings: Settings, spool: Path, notes: streams.SentNotes | None
) -> ActionCall:
    """A worker reads a 250 while PostgreSQL is away and dies before it could record it."""
    call = _call()
    gone = await create_pool(settings, application_name="flowline-tests", size=1)
    await gone.close()
    dying = await _live_ledger(pool, "dying/1", eager_pool=gone, notes=notes, spool=spool)
    assert await dying.reserve(call) is None
    with pytest.raises(Unavailable):
        await dying.sent(call, {"message_id": "<m@x>"})
    dying.close_spool()  # it died: its file stays, and its lock goes with the process
    await pool.execute("DELETE FROM workers WHERE owner = 'dying/1'")
    return call


async def test_a_250_noted_while_redis_lost_its_data_is_found_in_the_local_spool(
    pool: Pool, settings: Settings, redis: aioredis.Redis, keys: StreamKeys, tmp_path: Path
) -> None:
    """The 250 came while PostgreSQL was away, and Redis restarted empty before the worker
    died: the note in Redis is gone, the one in the local spool is not. The worker taking the
    reservation over finds it there and records the email done instead of sending it again."""
    notes = streams.SentNotes(redis, keys)
    call = await _sent_in_a_cut_then_killed(pool, settings, tmp_path, notes)
    await redis.delete(keys.sent(call.key))  # Redis lost its data

    taking_over = await _live_ledger(pool, "next/1", notes=notes, spool=tmp_path)
    assert await taking_over.reserve(call) == {"message_id": "<m@x>"}
    state = await pool.fetchval("SELECT state FROM effects WHERE key = $1", call.key)
    assert state == effects.DONE


async def test_a_worker_records_what_a_dead_worker_of_its_host_could_only_spool(
    pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    """A starting worker (and every heartbeat) records done the lines of the spool files
    whose process is gone, and deletes them; a live process's file is left alone."""
    call = await _sent_in_a_cut_then_killed(pool, settings, tmp_path, notes=None)
    alive = SentSpool(tmp_path, "alive/1")
    other = _call()
    alive.note(other.key, str(other.run_id), {"message_id": "<n@x>"})

    starting = await _live_ledger(pool, "next/1", spool=tmp_path)
    assert await starting.settle_spooled() == 1
    done = await pool.fetchrow("SELECT state, result FROM effects WHERE key = $1", call.key)
    assert (done["state"], done["result"]) == (effects.DONE, {"message_id": "<m@x>"})
    assert await pool.fetchval("SELECT count(*) FROM effects WHERE key = $1", other.key) == 0
    assert sorted(os.listdir(tmp_path)) == [alive.path.name]
    assert await starting.settle_spooled() == 0  # nothing twice
    alive.close(remove=True)
    assert os.listdir(tmp_path) == []


def test_a_spool_line_cut_short_is_skipped_and_the_others_are_read(tmp_path: Path) -> None:
    """A file whose last line was cut short (a full disk): the whole lines still count."""
    spool = SentSpool(tmp_path, "w/1")
    spool.note("k1", "r1", {"message_id": "<a@x>"})
    spool.close(remove=False)
    with spool.path.open("ab") as file:
        file.write(b'{"key": "k2", "run')
    reader = SentSpool(tmp_path, "w/2")
    assert reader.recall("k1") == {"message_id": "<a@x>"}
    assert reader.recall("k2") is None


@pytest.mark.parametrize("heartbeat", ["stale", "none"])
async def test_a_reservation_of_a_dead_owner_is_taken_over(pool: Pool, heartbeat: str) -> None:
    """A killed worker's emails go out again: its heartbeat stopped (or its row is gone)."""
    call = _call()
    if heartbeat == "stale":
        await pool.execute(
            "INSERT INTO workers (owner, consumer, heartbeat_at) "
            "VALUES ('died/1', 'died', now() - interval '61 seconds')"
        )
    await pool.execute(
        "INSERT INTO effects (key, run_id, state, owner) VALUES ($1, $2, 'reserved', 'died/1')",
        call.key,
        call.run_id,
    )
    assert await (await _live_ledger(pool, "restarted/2")).reserve(call) is None
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT owner FROM effects WHERE key = $1", call.key) == (
            "restarted/2"
        )


async def test_a_worker_back_from_an_outage_waits_before_taking_over(pool: Pool) -> None:
    """After the database was away every heartbeat looks old: a worker takes another's
    reservation only once its own heartbeat has gone through for `dead_after`, time for the
    other (maybe alive, waiting for an SMTP reply) to beat again."""
    call = _call()
    await pool.execute(
        "INSERT INTO effects (key, run_id, state, owner) VALUES ($1, $2, 'reserved', 'gone/1')",
        call.key,
        call.run_id,
    )
    clock = [0.0]
    ledger = DbEffectLedger(pool, owner="back/1", dead_after=30, clock=lambda: clock[0])
    await workers.beat(pool, "back/1", "back")
    ledger.heartbeat(True)
    clock[0] = 10.0
    with pytest.raises(EffectBusy) as busy:
        await ledger.reserve(call)
    assert 20 <= (busy.value.retry_after or 0) <= 21
    ledger.heartbeat(False)  # the database went away again: the count starts over
    ledger.heartbeat(True)
    clock[0] = 39.0
    with pytest.raises(EffectBusy):
        await ledger.reserve(call)
    clock[0] = 40.5
    assert await ledger.reserve(call) is None


class _CutPool:
    """A pool whose statements fail as when the connection to PostgreSQL is cut, while
    `cut` is true, or hang (a new connection black-holed) while `hang` is true."""

    def __init__(self, pool: Pool) -> None:
        self._pool, self.cut, self.hang = pool, False, False

    async def _gate(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.cut:
            raise ConnectionResetError("connection reset by peer")

    async def execute(self, *args: Any) -> str:
        await self._gate()
        return await self._pool.execute(*args)

    async def fetchval(self, *args: Any) -> Any:
        await self._gate()
        return await self._pool.fetchval(*args)

    async def fetchrow(self, *args: Any) -> Any:
        await self._gate()
        return await self._pool.fetchrow(*args)


async def test_a_reservation_a_failed_release_left_is_given_up_once_the_database_answers(
    pool: Pool,
) -> None:
    """Refused by the SMTP server, the email's reservation is released; when that release
    fails (the connection was cut), this live worker still holds it, and every other worker
    would wait for it as long as this one lives: the next heartbeat gives it up."""
    call = _call()
    flaky = _CutPool(pool)
    mine = await _live_ledger(cast(Pool, flaky), "worker-a/1")
    theirs = await _live_ledger(pool, "worker-b/1")
    assert await mine.reserve(call) is None
    flaky.cut = True
    with pytest.raises(Unavailable):
        await mine.release(call.key)
    with pytest.raises(EffectBusy):
        await theirs.reserve(call)
    with pytest.raises(Unavailable):
        await mine.settle_pending()  # still cut: kept for the next beat
    flaky.cut = False
    await mine.settle_pending()
    assert await theirs.reserve(call) is None


async def test_a_reservation_whose_release_failed_is_still_its_owners_to_use(pool: Pool) -> None:
    """The same worker tries the email again before the late release: it is still its own
    reservation, and the late release does not take it from under the attempt."""
    call = _call()
    flaky = _CutPool(pool)
    mine = await _live_ledger(cast(Pool, flaky), "worker-a/1")
    assert await mine.reserve(call) is None
    flaky.cut = True
    with pytest.raises(Unavailable):
        await mine.release(call.key)
    assert await mine.reserve(call) is None  # no statement: it never stopped being ours
    flaky.cut = False
    await mine.settle_pending()
    owner = await pool.fetchval("SELECT owner FROM effects WHERE key = $1", call.key)
    assert owner == "worker-a/1"


async def test_a_250_whose_record_hangs_is_noted_before_the_record_gives_up(
    pool: Pool, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    """A new connection to PostgreSQL black-holed: the `done` record may hang until a timeout.
    The 250 is noted in Redis within a fraction of a second, so a worker killed while it
    waits does not leave the next one to send the email again."""
    call = _call()
    flaky = _CutPool(pool)
    notes = streams.SentNotes(redis, keys)
    dying = await _live_ledger(pool, "dying/1", eager_pool=cast(Pool, flaky), notes=notes)
    assert await dying.reserve(call) is None
    flaky.hang = True
    recording = asyncio.create_task(dying.sent(call, {"message_id": "<m@x>"}))
    assert await eventually(lambda: notes.recall(call.key), timeout=2.0) == {"message_id": "<m@x>"}
    recording.cancel()  # killed while it waited
    with contextlib.suppress(asyncio.CancelledError):
        await recording
    await pool.execute("DELETE FROM workers WHERE owner = 'dying/1'")

    taking_over = await _live_ledger(pool, "next/1", notes=notes)
    assert await taking_over.reserve(call) == {"message_id": "<m@x>"}


async def test_a_250_whose_record_failed_is_recorded_after_the_next_heartbeat(
    pool: Pool,
) -> None:
    """The 250 came during a cut and its record failed: this live worker's reservation stays
    in the way of every other worker until the record is made, after its next heartbeat."""
    call = _call()
    flaky = _CutPool(pool)
    mine = await _live_ledger(pool, "worker-a/1", eager_pool=cast(Pool, flaky))
    theirs = await _live_ledger(pool, "worker-b/1")
    assert await mine.reserve(call) is None
    flaky.cut = True
    with pytest.raises(Unavailable):
        await mine.sent(call, {"message_id": "<m@x>"})
    with pytest.raises(EffectBusy):
        await theirs.reserve(call)
    await mine.settle_pending()
    assert await theirs.reserve(call) == {"message_id": "<m@x>"}


async def test_a_worker_stopping_in_order_records_what_it_sent_during_an_outage(
    pool: Pool,
) -> None:
    """SIGTERM after a 250 whose record failed: before it retires (and its reservations are
    taken over at once), the worker records the email done, the database being back."""
    call = _call()
    flaky = _CutPool(pool)
    mine = await _live_ledger(pool, "worker-a/1", eager_pool=cast(Pool, flaky))
    assert await mine.reserve(call) is None
    flaky.cut = True
    with pytest.raises(Unavailable):
        await mine.sent(call, {"message_id": "<m@x>"})
    await Heartbeat(pool, mine, consumer="worker-a", interval=1.0).retire()
    assert await pool.fetchval("SELECT state FROM effects WHERE key = $1", call.key) == "done"
