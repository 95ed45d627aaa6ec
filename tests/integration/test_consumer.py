"""The worker against real PostgreSQL, Redis and SMTP, in this process: at-least-once
consumption, acknowledgement after the work is recorded, idempotent effects, reclaiming,
dead letters (CONTRACT §5)."""

from __future__ import annotations

import copy

import redis.asyncio as aioredis
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import SettingsFactory
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
from workflow_core import events
from workflow_core.adapters.streams import StreamKeys
from workflow_core.ids import effect_key, new_id, run_id_for
from workflow_core.persistence.tables import effects as effects_table
from workflow_core.persistence.tables import outbox, run_actions
from workflow_core.settings import Settings


async def _stream_fields(engine: AsyncEngine, event_id: object) -> dict[str, str]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(outbox).where(outbox.c.event_id == event_id))).one()
    return events.Event(row.event_id, row.event_type, row.payload).to_fields()


async def test_an_event_becomes_an_email_a_completed_run_and_an_ack(
    engine: AsyncEngine,
    settings: Settings,
    smtp: SmtpServer,
    redis: aioredis.Redis,
    keys: StreamKeys,
) -> None:
    workflow_id = await create_workflow(engine)
    email = unique_email()
    submission_id, event_id = await submit(engine, {"email": email, "name": "Ada"})
    assert await publish_all(engine, settings) == 1

    worker = await run_worker_until_drained(settings)

    [mail] = smtp.to(email)
    assert mail.message["Subject"] == "Form Submission Confirmation - form_submitted"
    [run] = await run_rows(engine)
    assert (run.status, run.workflow_id, run.submission_id) == (
        "completed",
        workflow_id,
        submission_id,
    )
    assert run.id == run_id_for(event_id, workflow_id)
    assert worker.stats.handled == 1
    assert await pending_count(redis, keys) == 0


async def test_a_redelivered_event_starts_no_second_run_and_sends_no_second_email(
    engine: AsyncEngine,
    settings: Settings,
    smtp: SmtpServer,
    redis: aioredis.Redis,
    keys: StreamKeys,
) -> None:
    await create_workflow(engine)
    email = unique_email()
    _, event_id = await submit(engine, {"email": email})
    await publish_all(engine, settings)
    await redis.xadd(keys.stream, await _stream_fields(engine, event_id))  # the relay repeated it

    await run_worker_until_drained(settings)
    await redis.xadd(keys.stream, await _stream_fields(engine, event_id))  # and again, later
    await run_worker_until_drained(settings)

    assert len(smtp.to(email)) == 1
    assert len(await run_rows(engine)) == 1


async def test_an_email_of_a_worker_that_died_before_its_250_is_sent(
    engine: AsyncEngine, make_settings: SettingsFactory, smtp: SmtpServer
) -> None:
    """A worker died holding an email (reserved, maybe with its content on the wire, before
    the server's 250): the server did not take it (RFC 5321), so once the owner is dead (no
    heartbeat) the email is sent, once, with its Message-ID."""
    settings = make_settings(worker_heartbeat_seconds=0.2, worker_dead_after_seconds=1)
    workflow_id = await create_workflow(engine)
    email = unique_email()
    _, event_id = await submit(engine, {"email": email})
    run_id = run_id_for(event_id, workflow_id)
    async with engine.begin() as conn:
        await conn.execute(
            insert(effects_table).values(
                key=effect_key(run_id, 1, 0),
                run_id=run_id,
                state="reserved",
                owner="died-holding-it/0",
            )
        )
    await publish_all(engine, settings)

    async with running_worker(settings):
        [mail] = await eventually(lambda: smtp.to(email), timeout=30, what="the email")
        await eventually(lambda: _completed(engine), what="the run completed")
    assert mail.message["Subject"] == "Form Submission Confirmation - form_submitted"
    assert len(smtp.to(email)) == 1


async def _completed(engine: AsyncEngine) -> bool:
    """The test's one run has completed."""
    return [run.status for run in await run_rows(engine)] == ["completed"]


async def test_entries_of_a_dead_consumer_are_reclaimed(
    engine: AsyncEngine,
    make_settings: SettingsFactory,
    smtp: SmtpServer,
    redis: aioredis.Redis,
    keys: StreamKeys,
) -> None:
    settings = make_settings(claim_idle_seconds=0.3, claim_interval_seconds=0.1)
    await create_workflow(engine)
    emails = [unique_email() for _ in range(3)]
    for email in emails:
        await submit(engine, {"email": email})
    await publish_all(engine, settings)
    await redis.xgroup_create(keys.stream, keys.group, id="0", mkstream=True)
    taken = await redis.xreadgroup(keys.group, "died-holding-these", {keys.stream: ">"}, count=10)
    assert len(taken[0][1]) == 3  # delivered to a consumer that will never ack

    worker = await run_worker_until_drained(settings)

    assert all(len(smtp.to(email)) == 1 for email in emails)
    assert worker.stats.reclaimed == 3
    assert await pending_count(redis, keys) == 0


async def test_own_pending_history_is_read_first_then_new_entries(
    engine: AsyncEngine,
    make_settings: SettingsFactory,
    smtp: SmtpServer,
    redis: aioredis.Redis,
    keys: StreamKeys,
) -> None:
    """A restarted worker (same consumer name) takes back what it held at once, and then goes
    on to new entries: an empty history answer must not keep it re-reading history."""
    settings = make_settings(worker_consumer_name="restarted", claim_idle_seconds=3600)
    await create_workflow(engine)
    held, fresh = unique_email(), unique_email()
    await submit(engine, {"email": held})
    await publish_all(engine, settings)
    await redis.xgroup_create(keys.stream, keys.group, id="0", mkstream=True)
    await redis.xreadgroup(keys.group, "restarted", {keys.stream: ">"}, count=10)
    await submit(engine, {"email": fresh})
    await publish_all(engine, settings)

    worker = await run_worker_until_drained(settings, timeout=15)

    assert len(smtp.to(held)) == 1 and len(smtp.to(fresh)) == 1
    assert worker.stats.reclaimed == 0  # history, not XAUTOCLAIM, brought the held one back


async def test_a_malformed_entry_goes_to_the_dead_letter_stream(
    settings: Settings,
    redis: aioredis.Redis,
    keys: StreamKeys,
) -> None:
    entry_id = await redis.xadd(keys.stream, {"type": "form_submitted", "payload": "{oops"})

    worker = await run_worker_until_drained(settings)

    [(_, fields)] = await redis.xrange(keys.dead)
    assert fields["original_id"] == entry_id
    assert "malformed" in fields["error"]
    assert fields["payload"] == "{oops"
    assert worker.stats.dead_lettered == 1
    assert await pending_count(redis, keys) == 0


async def test_an_event_that_keeps_failing_is_dead_lettered_after_the_limit(
    make_settings: SettingsFactory,
    redis: aioredis.Redis,
    keys: StreamKeys,
) -> None:
    settings = make_settings(delivery_limit=3, claim_idle_seconds=0.2, claim_interval_seconds=0.1)
    event = events.run_resume(new_id(), new_id(), "task", step_seq="not-a-number")
    fields = event.to_fields()
    fields["payload"] = fields["payload"].replace(str(event.payload["run_id"]), "not-a-uuid")
    await redis.xadd(keys.stream, fields)

    worker = await run_worker_until_drained(settings)

    [(_, dead)] = await redis.xrange(keys.dead)
    assert dead["deliveries"] == "3"
    assert "ValueError" in dead["error"]
    assert worker.stats.dead_lettered == 1
    assert await pending_count(redis, keys) == 0


async def _attempts(engine: AsyncEngine) -> list[tuple[int, str, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(run_actions.c.attempt, run_actions.c.status, run_actions.c.error).order_by(
                run_actions.c.id
            )
        )
        return [(row.attempt, row.status, row.error) for row in rows]


async def test_an_smtp_try_later_reply_is_retried_until_the_email_goes_out(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    await create_workflow(engine)
    email = unique_email()
    smtp.behaviour.refuse_data = "451 4.3.0 try again later"
    await submit(engine, {"email": email, "name": "Ada"})
    await publish_all(engine, settings)

    async with running_worker(settings):

        async def retried_twice() -> bool:
            return len(await _attempts(engine)) >= 2

        await eventually(retried_twice, what="two refused attempts")
        smtp.behaviour.refuse_data = None
        await eventually(lambda: _completed(engine), what="the run, once SMTP accepts the email")

    attempts = await _attempts(engine)
    assert attempts[0][1] == "retrying" and "451" in (attempts[0][2] or "")
    assert attempts[-1][1] == "succeeded" and attempts[-1][0] == len(attempts)
    assert len(smtp.to(email)) == 1


async def test_an_smtp_refusal_of_the_recipient_fails_the_run_at_once(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    await create_workflow(engine)
    smtp.behaviour.refuse_rcpt = "550 5.1.1 no such user here"
    await submit(engine, {"email": unique_email(), "name": "Ada"})
    await publish_all(engine, settings)

    await run_worker_until_drained(settings)

    [run] = await run_rows(engine)
    assert run.status == "failed" and "550" in run.error and "no such user" in run.error
    [(attempt, status, error)] = await _attempts(engine)  # permanent: no second attempt
    assert (attempt, status) == (1, "failed") and "550" in (error or "")
    assert smtp.received == []


async def test_a_failed_first_step_leaves_no_reservation_for_the_emails_it_did_not_reach(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    """The first step's emails are reserved with the run; when the step fails at the first
    email, the second one's reservation is given up, so a retry elsewhere need not wait."""
    email = {"type": "send_email", "config": {"to_path": "data.email", "subject": "s", "body": "b"}}
    definition = copy.deepcopy(EXAMPLE_WORKFLOW["definition"])
    definition["steps"][0]["actions"] = [email, email]
    await create_workflow(engine, definition)
    smtp.behaviour.refuse_rcpt = "550 5.1.1 no such user here"
    await submit(engine, {"email": unique_email(), "name": "Ada"})
    await publish_all(engine, settings)

    await run_worker_until_drained(settings)

    [run] = await run_rows(engine)
    assert run.status == "failed" and "actions[0]" in run.error
    async with engine.connect() as conn:
        left = (await conn.execute(select(effects_table.c.key, effects_table.c.state))).all()
    assert left == []


async def test_a_worker_busy_longer_than_the_claim_timeout_keeps_its_entry(
    engine: AsyncEngine,
    make_settings: SettingsFactory,
    smtp: SmtpServer,
    redis: aioredis.Redis,
    keys: StreamKeys,
) -> None:
    """The SMTP server takes 3 s per email, three times CLAIM_IDLE_SECONDS: the heartbeat keeps
    the entry from looking idle, so the other worker's reclaimer never takes it over."""
    timing = {"claim_idle_seconds": 1.0, "claim_interval_seconds": 0.1}
    first = make_settings(worker_consumer_name="first", **timing)
    second = make_settings(worker_consumer_name="second", **timing)
    await create_workflow(engine)
    email = unique_email()
    smtp.behaviour.data_delay = 3.0

    async with running_worker(first) as one, running_worker(second) as other:
        await submit(engine, {"email": email})
        await publish_all(engine, first)
        await eventually(lambda: smtp.to(email), what="the email")

        await eventually(lambda: _completed(engine), timeout=20, what="the run")
    workers = [await one, await other]

    assert sum(worker.stats.reclaimed for worker in workers) == 0
    assert sum(worker.stats.handled for worker in workers) == 1
    assert len(smtp.to(email)) == 1
    [run] = await run_rows(engine)
    assert run.deliveries == 1


async def test_a_retry_timer_outlives_the_worker_that_set_it(
    engine: AsyncEngine, make_settings: SettingsFactory, smtp: SmtpServer
) -> None:
    """An email refused with 451 waits for its retry in PostgreSQL, not in the worker: the
    worker stops, a new one starts, and the retry fires there."""
    settings = make_settings(action_retry_initial_seconds=2.0, action_retry_max_seconds=2.0)
    await create_workflow(engine)
    email = unique_email()
    smtp.behaviour.refuse_data = "451 4.3.0 try again later"
    await submit(engine, {"email": email, "name": "Ada"})
    await publish_all(engine, settings)

    async def retrying() -> bool:
        return [status for _, status, _ in await _attempts(engine)] == ["retrying"]

    async with running_worker(settings):
        await eventually(retrying, what="the first refused attempt")
    smtp.behaviour.refuse_data = None

    async with running_worker(make_settings(worker_consumer_name="the-next-one")):
        await eventually(
            lambda: _completed(engine), timeout=20, what="the retry, in the next worker"
        )
    assert len(smtp.to(email)) == 1
    assert [status for _, status, _ in await _attempts(engine)] == ["retrying", "succeeded"]
