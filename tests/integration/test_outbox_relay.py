"""The transactional outbox and its relay on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.flows import submit
from tests.support.net import free_port
from tests.support.waiting import eventually
from workflow_core import events
from workflow_core.adapters import streams
from workflow_core.adapters.streams import StreamKeys
from workflow_core.ids import new_id
from workflow_core.persistence import outbox as outbox_module
from workflow_core.persistence import outbox as outbox_repo
from workflow_core.persistence import submissions as submissions_repo
from workflow_core.persistence.listen import Listener
from workflow_core.persistence.pool import Pool
from workflow_core.persistence.submissions import NewSubmission
from workflow_core.persistence.tables import outbox, submissions
from workflow_core.relay import RECONCILE_LOCK, FastPublisher, OutboxRelay
from workflow_core.settings import Settings


def _relay(
    pool: Pool,
    redis: aioredis.Redis,
    settings: Settings,
    batch: int = 500,
    listener: Listener | None = None,
    **timing: float,
) -> OutboxRelay:
    """A relay; with `listener` (entered by the caller) it hears NOTIFY, else it only polls."""
    return OutboxRelay(
        pool,
        redis,
        StreamKeys.from_settings(settings),
        (listener or Listener(settings.postgres_dsn)).channel(outbox_module.CHANNEL),
        batch_size=batch,
        **timing,
    )


async def _unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
        return int((await conn.execute(query)).scalar_one())


async def test_the_submission_and_its_event_commit_together_or_not_at_all(
    engine: AsyncEngine, pool: Pool
) -> None:
    """When the event cannot be written, the submission is not kept either."""
    async with engine.begin() as conn:  # this test's own database: make every event fail
        await conn.execute(text("ALTER TABLE outbox ADD CONSTRAINT refuse CHECK (false) NOT VALID"))
    with pytest.raises(asyncpg.CheckViolationError):
        await submissions_repo.create(
            pool, template_id="t", org_id="o", data={}, now=datetime.now(UTC)
        )
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(submissions))).scalar() == 0
        assert (await conn.execute(select(func.count()).select_from(outbox))).scalar() == 0


async def test_relay_publishes_in_order_and_marks_rows(
    engine: AsyncEngine, pool: Pool, settings: Settings, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    submitted = [await submit(engine, {"n": n}) for n in range(5)]
    relay = _relay(pool, streams.client(settings), settings, batch=2)

    assert [await relay.publish_batch(everything=True) for _ in range(4)] == [2, 2, 1, 0]

    entries = await redis.xrange(keys.stream)
    published = [events.from_fields(fields) for _, fields in entries]
    assert [e.event_id for e in published] == [event_id for _, event_id in submitted]
    assert [e.payload["data"]["n"] for e in published] == list(range(5))
    async with engine.connect() as conn:
        rows = list(await conn.execute(select(outbox.c.stream_entry_id).order_by(outbox.c.id)))
    assert [row.stream_entry_id for row in rows] == [entry_id for entry_id, _ in entries]


async def test_prune_deletes_only_events_taken_longer_ago_than_the_retention(
    engine: AsyncEngine, pool: Pool, settings: Settings
) -> None:
    """An event is kept until a worker took it and the retention passed: one published long
    ago and never taken (Redis lost it) stays for the reconcile sweep."""
    old_taken, fresh_taken, old_untaken = [await submit(engine, {"n": n}) for n in range(3)]
    relay = _relay(pool, streams.client(settings), settings, retention_seconds=3600)
    await relay.publish_batch(everything=True)
    async with engine.begin() as conn:
        age = text(
            "UPDATE outbox SET published_at = now() - interval '2 hours', "
            "taken_at = CASE WHEN event_id = :old THEN now() - interval '2 hours' "
            "WHEN event_id = :fresh THEN now() END"
        )
        await conn.execute(
            age, {"old": old_taken[1], "fresh": fresh_taken[1], "untaken": old_untaken[1]}
        )

    assert await relay.prune() == 1

    async with engine.connect() as conn:
        kept = set((await conn.execute(select(outbox.c.event_id))).scalars())
    assert kept == {fresh_taken[1], old_untaken[1]}
    keep_for_ever = _relay(pool, streams.client(settings), settings)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE outbox SET taken_at = now() - interval '400 days'"))
    assert await keep_for_ever.prune() == 0  # retention 0: nothing is ever deleted


async def test_the_sweep_publishes_again_what_no_worker_took_one_process_at_a_time(
    engine: AsyncEngine, pool: Pool, settings: Settings, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    """Redis lost what was published: the outbox still says `published` but nobody took it.
    After EVENT_RECONCILE_SECONDS the sweep publishes it again; a relay in another process
    sweeping at the same moment finds the lock taken and does nothing."""
    taken, lost = [await submit(engine, {"n": n}) for n in range(2)]
    relay = _relay(pool, streams.client(settings), settings, reconcile_seconds=60)
    await relay.publish_batch(everything=True)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE outbox SET published_at = now() - interval '61 seconds', "
                "taken_at = CASE WHEN event_id = :taken THEN now() END"
            ),
            {"taken": taken[1]},
        )
    await redis.delete(keys.stream)

    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT pg_advisory_xact_lock($1)", RECONCILE_LOCK)
        assert await relay.reconcile() == 0  # another process is sweeping
    assert await relay.reconcile() == 1
    assert await relay.reconcile() == 0  # published again just now: not yet due again

    [(_, entries)] = await redis.xread({keys.stream: "0"})
    assert [fields["event_id"] for _, fields in entries] == [str(lost[1])]


async def test_the_sweep_leaves_alone_what_waits_in_the_stream(
    engine: AsyncEngine, pool: Pool, settings: Settings, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    """Workers far behind (a backlog older than EVENT_RECONCILE_SECONDS): the events are not
    taken yet, but they are in the stream, and publishing them again would only add to the
    backlog, at every sweep. Only the one Redis lost goes out again."""
    waiting, lost = [await submit(engine, {"n": n}) for n in range(2)]
    relay = _relay(pool, streams.client(settings), settings, reconcile_seconds=60)
    await relay.publish_batch(everything=True)
    await pool.execute("UPDATE outbox SET published_at = now() - interval '61 seconds'")
    [(_, entries)] = await redis.xread({keys.stream: "0"})
    by_event = {fields["event_id"]: entry_id for entry_id, fields in entries}
    await redis.xdel(keys.stream, by_event[str(lost[1])])

    assert await relay.reconcile(everything=True) == 1
    [(_, entries)] = await redis.xread({keys.stream: "0"})
    assert sorted(fields["event_id"] for _, fields in entries) == sorted(
        [str(waiting[1]), str(lost[1])]
    )


async def test_relays_in_several_processes_publish_each_event_once(
    engine: AsyncEngine, pool: Pool, settings: Settings, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    for n in range(300):
        await submit(engine, {"n": n})
    relays = [_relay(pool, streams.client(settings), settings, batch=25) for _ in range(4)]

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while count := await relay.publish_batch(everything=True):
            total += count
        return total

    counts = await asyncio.gather(*(drain(relay) for relay in relays))

    assert sum(counts) == 300
    entries = await redis.xrange(keys.stream)
    assert len({fields["event_id"] for _, fields in entries}) == len(entries) == 300


async def test_while_redis_is_away_events_wait_in_the_outbox(
    engine: AsyncEngine, pool: Pool, settings: Settings, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    await submit(engine, {"n": 1})
    nowhere = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    with pytest.raises(Exception):  # noqa: B017 - any connection error will do
        await _relay(pool, nowhere, settings).publish_batch(everything=True)
    assert await _unpublished(engine) == 1

    assert (
        await _relay(pool, streams.client(settings), settings).publish_batch(everything=True) == 1
    )
    assert await _unpublished(engine) == 0
    assert len(await redis.xrange(keys.stream)) == 1


async def test_the_running_relay_is_woken_by_other_events_and_leaves_submissions_their_grace(
    engine: AsyncEngine, pool: Pool, settings: Settings, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    listener = Listener(settings.postgres_dsn)
    relay = _relay(
        pool,
        streams.client(settings),
        settings,
        listener=listener,
        poll_seconds=1.0,
        grace_seconds=1.5,
    )
    stop = asyncio.Event()
    await listener.__aenter__()
    task = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.sleep(0.5)  # listening
        started = time.monotonic()
        async with pool.acquire() as conn:  # what a task completion writes
            await outbox_repo.add(conn, events.run_resume(new_id(), new_id(), "task", step_seq=1))
        await eventually(lambda: redis.xlen(keys.stream), timeout=5, what="the resume published")
        assert time.monotonic() - started < 0.8  # the NOTIFY woke it, not its poll

        started = time.monotonic()
        await submit(engine, {"n": 1})  # nobody took the fast path for this one
        await eventually(lambda: _xlen_is(redis, keys, 2), timeout=10, what="the submission")
        assert time.monotonic() - started >= 1.4  # its grace period first
    finally:
        stop.set()
        await task
        await listener.__aexit__(None, None, None)


async def _xlen_is(redis: aioredis.Redis, keys: StreamKeys, length: int) -> bool:
    return int(await redis.xlen(keys.stream)) == length


async def test_the_fast_path_publishes_at_once_and_marks_the_row(
    pool: Pool, settings: Settings, redis: aioredis.Redis, keys: StreamKeys, engine: AsyncEngine
) -> None:
    publisher = FastPublisher(pool, streams.client(settings), keys)
    [event] = await submissions_repo.create_many(
        pool, [NewSubmission("t", "o", {"n": 1}, datetime.now(UTC))]
    )
    publisher.soon(event)
    await publisher.close()

    [(entry_id, fields)] = await redis.xrange(keys.stream)
    assert fields["event_id"] == str(event.event_id)
    async with engine.connect() as conn:
        row = (await conn.execute(select(outbox.c.published_at, outbox.c.stream_entry_id))).one()
    assert row.published_at is not None and row.stream_entry_id == entry_id
    relay = _relay(pool, streams.client(settings), settings)
    assert await relay.publish_batch(everything=True) == 0  # nothing left for the relay
