"""The webhook action end to end in this process: a submission, the outbox relay, the worker
with its real HTTP client and timer scheduler, and a real HTTP receiver on 127.0.0.1 that
checks each request's Standard Webhooks signature and misbehaves on request."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import SettingsFactory
from tests.support.flows import (
    create_workflow,
    publish_all,
    run_rows,
    run_worker_until_drained,
    running_worker,
    submit,
)
from tests.support.http_receiver import Answer, HttpReceiver, http_receiver
from tests.support.waiting import eventually
from workflow_core import events
from workflow_core.adapters.streams import StreamKeys
from workflow_core.ids import derived_id, effect_key
from workflow_core.persistence.tables import outbox, run_actions
from workflow_core.settings import Settings

ORG = "org_webhooks"
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
FORM = {"name": "Ada Lovelace", "email": "ada@example.com", "plan": "pro"}


@pytest.fixture
async def receiver() -> AsyncIterator[HttpReceiver]:
    async with http_receiver(secret=SECRET) as started:
        yield started


@pytest.fixture
def fast_retries(make_settings: SettingsFactory) -> Settings:
    return make_settings(action_retry_initial_seconds=0.05, action_retry_max_seconds=0.2)


def webhook_definition(
    receiver: HttpReceiver, retry: dict[str, Any] | None = None, **config: Any
) -> dict[str, Any]:
    action: dict[str, Any] = {
        "type": "webhook",
        "config": {
            "url": receiver.url + "/hooks/{org_id}?plan={data.plan}",
            "headers": {"X-Submission": "{submission_id}", "X-Name": "{data.name}"},
            "body": {"event": "signup", "who": "{data.name}", "submission": "{submission_id}"},
            "secret": SECRET,
            **config,
        },
    }
    if retry:
        action["retry"] = retry
    return {
        "trigger": {"type": "form_submitted"},
        "initial_step_id": "notify",
        "steps": [{"id": "notify", "type": "auto_action", "actions": [action]}],
    }


async def start_one(
    engine: AsyncEngine,
    settings: Settings,
    definition: dict[str, Any],
    form: dict[str, Any] | None = None,
) -> tuple[UUID, UUID]:
    """Create the workflow, submit one form for it and publish the event: (submission, event)."""
    await create_workflow(engine, definition, org_id=ORG)
    ids = await submit(engine, form or FORM, org_id=ORG)
    assert await publish_all(engine, settings) == 1
    return ids


async def the_run(engine: AsyncEngine) -> Any:
    [run] = await run_rows(engine)
    return run


async def finished_run(engine: AsyncEngine) -> Any:
    async def finished() -> Any:
        rows = await run_rows(engine)
        return rows[0] if rows and rows[0].status in {"completed", "failed"} else None

    return await eventually(finished, what="the run to finish")


async def action_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        query = select(run_actions).order_by(run_actions.c.attempt, run_actions.c.id)
        return list(await conn.execute(query))


def verified_ids(receiver: HttpReceiver) -> set[str]:
    assert [r.signature_error for r in receiver.received] == [None] * len(receiver.received)
    return {request.headers["webhook-id"] for request in receiver.received}


async def test_the_receiver_gets_the_templated_signed_request_and_the_run_records_it(
    engine: AsyncEngine, settings: Settings, receiver: HttpReceiver
) -> None:
    form = {**FORM, "name": "Ada\r\nX-Injected: yes"}
    submission_id, _ = await start_one(engine, settings, webhook_definition(receiver), form)

    await run_worker_until_drained(settings)

    [request] = receiver.received
    assert request.signature_error is None
    assert (request.method, request.path, request.query) == ("POST", f"/hooks/{ORG}", "plan=pro")
    assert request.json() == {
        "event": "signup",
        "who": "Ada\r\nX-Injected: yes",  # inside the JSON body the value is intact
        "submission": str(submission_id),
    }
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-submission"] == str(submission_id)
    assert request.headers["x-name"] == "Ada X-Injected: yes"
    assert "x-injected" not in request.headers
    assert request.headers["user-agent"].startswith("Flowline")

    run = await the_run(engine)
    assert run.status == "completed"
    message_id = f"msg_{derived_id(effect_key(run.id, 1, 0)).hex}"
    assert request.headers["webhook-id"] == message_id
    [action] = await action_rows(engine)
    expected = {
        "status": 200,
        "webhook_id": message_id,
        "url": f"{receiver.url}/hooks/{ORG}?plan=pro",
        "response_excerpt": '{"ok": true}',
        "response": {
            "status": 200,
            "headers": {"content-type": "application/json", "content-length": "12"},
        },
    }
    assert (action.action_type, action.attempt, action.status) == ("webhook", 1, "succeeded")
    assert action.result == expected  # the history keeps no parsed body
    kept = {k: v for k, v in run.context["steps"]["notify"].items() if k != "actions"}
    assert kept == {**expected, "response": {**expected["response"], "json": {"ok": True}}}


async def test_without_a_body_the_receiver_gets_the_whole_context(
    engine: AsyncEngine, settings: Settings, receiver: HttpReceiver
) -> None:
    definition = webhook_definition(receiver)
    del definition["steps"][0]["actions"][0]["config"]["body"]
    submission_id, _ = await start_one(engine, settings, definition)

    await run_worker_until_drained(settings)

    [request] = receiver.received
    assert request.signature_error is None
    sent = request.json()
    assert (sent["submission_id"], sent["org_id"], sent["data"]) == (
        str(submission_id),
        ORG,
        FORM,
    )
    assert sent["run_id"] == str((await the_run(engine)).id)


async def test_two_server_errors_then_success_is_three_attempts_with_one_webhook_id(
    engine: AsyncEngine, fast_retries: Settings, receiver: HttpReceiver
) -> None:
    receiver.answer(Answer(500, b"database is down"), times=2)
    await start_one(engine, fast_retries, webhook_definition(receiver))

    async with running_worker(fast_retries):
        run = await finished_run(engine)

    assert run.status == "completed"
    assert len(receiver.received) == 3
    assert verified_ids(receiver) == {f"msg_{derived_id(effect_key(run.id, 1, 0)).hex}"}
    rows = await action_rows(engine)
    assert [(row.attempt, row.status) for row in rows] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "succeeded"),
    ]
    for row in rows[:2]:
        assert "answered 500: database is down" in row.error
    assert rows[2].result["status"] == 200
    assert rows[2].result["response_excerpt"] == '{"ok": true}'


async def test_429_is_retried_no_sooner_than_retry_after(
    engine: AsyncEngine, fast_retries: Settings, receiver: HttpReceiver
) -> None:
    receiver.answer(Answer(429, b"slow down", {"Retry-After": "1"}))
    # Without Retry-After the next attempt would come within 10 ms.
    retry = {"max_attempts": 3, "initial_delay": 0.01, "max_delay": 5}
    await start_one(engine, fast_retries, webhook_definition(receiver, retry=retry))

    async with running_worker(fast_retries):
        run = await finished_run(engine)

    assert run.status == "completed"
    first, second = receiver.received
    assert second.at - first.at >= 0.9
    assert len(verified_ids(receiver)) == 1
    rows = await action_rows(engine)
    assert [(row.attempt, row.status) for row in rows] == [(1, "retrying"), (2, "succeeded")]
    assert "answered 429: slow down" in rows[0].error


async def test_a_timeout_is_retried(
    engine: AsyncEngine, fast_retries: Settings, receiver: HttpReceiver
) -> None:
    receiver.answer(Answer(hang=True))
    await start_one(engine, fast_retries, webhook_definition(receiver, timeout=0.3))

    async with running_worker(fast_retries):
        run = await finished_run(engine)

    assert run.status == "completed"
    assert len(receiver.received) == 2
    assert len(verified_ids(receiver)) == 1
    rows = await action_rows(engine)
    assert [(row.attempt, row.status) for row in rows] == [(1, "retrying"), (2, "succeeded")]
    assert "timed out" in rows[0].error


async def test_a_receiver_trickling_its_answer_is_cut_off_at_the_timeout_and_retried(
    engine: AsyncEngine, fast_retries: Settings, receiver: HttpReceiver
) -> None:
    """One header line every 0.2 s never trips a per-read timeout; the action's `timeout`
    bounds the whole call, so the attempt ends after 1 s instead of when the receiver stops."""
    receiver.answer(Answer(trickle_seconds=0.2))
    await start_one(engine, fast_retries, webhook_definition(receiver, timeout=1))

    async with running_worker(fast_retries):
        run = await finished_run(engine)

    assert run.status == "completed"
    rows = await action_rows(engine)
    assert [(row.attempt, row.status) for row in rows] == [(1, "retrying"), (2, "succeeded")]
    assert "timed out: no complete answer within 1 s" in rows[0].error
    took = (rows[0].finished_at - rows[0].started_at).total_seconds()
    assert 1 <= took < 3, took


async def test_a_400_fails_the_run_at_once(
    engine: AsyncEngine, fast_retries: Settings, receiver: HttpReceiver
) -> None:
    receiver.answer(Answer(400, b'{"error": "field plan is invalid"}'))
    await start_one(engine, fast_retries, webhook_definition(receiver))

    async with running_worker(fast_retries):
        run = await finished_run(engine)
        [row] = await action_rows(engine)

    assert run.status == "failed"
    assert "answered 400" in run.error
    assert "field plan is invalid" in run.error
    assert len(receiver.received) == 1
    assert (row.attempt, row.status) == (1, "failed")
    assert "answered 400" in row.error


async def test_a_redelivered_event_does_not_call_the_webhook_again(
    engine: AsyncEngine,
    settings: Settings,
    receiver: HttpReceiver,
    redis: aioredis.Redis,
    keys: StreamKeys,
) -> None:
    _, event_id = await start_one(engine, settings, webhook_definition(receiver))
    await run_worker_until_drained(settings)
    assert len(receiver.received) == 1

    async with engine.connect() as conn:
        row = (await conn.execute(select(outbox).where(outbox.c.event_id == event_id))).one()
    fields: dict[Any, Any] = events.Event(row.event_id, row.event_type, row.payload).to_fields()
    await redis.xadd(keys.stream, fields)  # the relay published it again
    worker = await run_worker_until_drained(settings)

    assert worker.stats.handled == 1
    assert len(receiver.received) == 1
    assert (await the_run(engine)).status == "completed"
    assert len(await action_rows(engine)) == 1


# destinations (CONTRACT §9): refused before anything is sent, the run failing with the reason


@pytest.mark.usefixtures("loopback_only")
async def test_a_webhook_to_loopback_fails_the_run_when_the_setting_does_not_list_it(
    engine: AsyncEngine, make_settings: SettingsFactory, receiver: HttpReceiver
) -> None:
    settings = make_settings(webhook_allowed_hosts="")
    await start_one(engine, settings, webhook_definition(receiver))

    async with running_worker(settings):
        run = await finished_run(engine)
        rows = await action_rows(engine)

    assert run.status == "failed"
    assert "refused: 127.0.0.1 is a loopback address" in run.error
    assert "WEBHOOK_ALLOWED_HOSTS" in run.error
    assert [(row.attempt, row.status) for row in rows] == [(1, "failed")]  # not retried
    assert receiver.connections == 0


@pytest.mark.usefixtures("loopback_only")
@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("10.1.2.3", "10.1.2.3 is a private address (RFC 1918)"),
        ("2852039166", "2852039166 is 169.254.169.254, a link-local address"),
        ("100.64.0.1", "100.64.0.1 is a carrier-grade NAT address"),
    ],
)
async def test_an_internal_address_from_the_form_is_refused_at_run_time(
    engine: AsyncEngine, settings: Settings, receiver: HttpReceiver, host: str, says: str
) -> None:
    """Validation cannot see an address that comes from the form; the call is refused."""
    definition = webhook_definition(receiver, url="http://{data.host}:9/hooks")
    await start_one(engine, settings, definition, {**FORM, "host": host})

    async with running_worker(settings):
        run = await finished_run(engine)

    assert run.status == "failed"
    assert f"refused: {says}" in run.error
    assert receiver.connections == 0


async def test_a_redirect_is_not_followed_and_fails_the_run(
    engine: AsyncEngine, settings: Settings, receiver: HttpReceiver, loopback_only: list[str]
) -> None:
    """The redirect points at another address the settings allow; it is not followed all the
    same (a redirect could lead anywhere, and the receiver never saw the call)."""
    async with http_receiver() as elsewhere:
        receiver.answer(Answer(302, b"", {"location": f"{elsewhere.url}/inside"}))
        await start_one(engine, settings, webhook_definition(receiver))

        async with running_worker(settings):
            run = await finished_run(engine)

        assert elsewhere.connections == 0
    assert run.status == "failed"
    assert "answered 302 (redirects are not followed" in run.error
    assert f"Location: {elsewhere.url}/inside" in run.error
    assert len(receiver.received) == 1
