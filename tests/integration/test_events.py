"""Events of any type (POST /events) and wait_for_event steps, on real PostgreSQL, Redis and SMTP
with the API and the worker in this process: the route's answers, events starting runs, runs
waiting for an event that comes after them or came before, the timeout, and what does not
match (another organisation, another value, an event older than the run)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import SettingsFactory
from tests.support.examples import email_step, unique_email
from tests.support.flows import (
    create_workflow,
    flowline_connection,
    publish_all,
    running_worker,
    submit,
)
from tests.support.inprocess import InProcessApi, in_process_api
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from workflow_core import events, metrics
from workflow_core.ids import new_id
from workflow_core.persistence import posted_events
from workflow_core.persistence.pool import Pool
from workflow_core.persistence.tables import runs
from workflow_core.settings import Settings

ADMIN = "fl_admin_" + uuid.uuid4().hex + uuid.uuid4().hex


@pytest.fixture
async def api(make_settings: SettingsFactory) -> AsyncIterator[InProcessApi]:
    async with in_process_api(make_settings(api_admin_key=ADMIN)) as started:
        started.client.headers["Authorization"] = f"Bearer {ADMIN}"
        yield started


def confirmation_flow(timeout: str = "P3D") -> dict[str, Any]:
    """The issue's example: wait for `email.confirmed` of this submission, or time out."""
    return {
        "trigger": {"type": "form_submitted"},
        "initial_step_id": "confirm",
        "steps": [
            {
                "id": "confirm",
                "type": "wait_for_event",
                "config": {
                    "event": "email.confirmed",
                    "match": {"path": "data.submission_id", "equals": "{submission_id}"},
                    "timeout": timeout,
                },
                "transitions": [
                    {
                        "to": "remind",
                        "conditions": {
                            "path": "steps.confirm.timed_out",
                            "op": "==",
                            "value": True,
                        },
                    },
                    {"to": "welcome"},
                ],
            },
            email_step("welcome", "Welcome {steps.confirm.event.data.name}"),
            email_step("remind", "Please confirm"),
        ],
    }


async def post_event(
    engine: AsyncEngine, event_type: str, data: dict[str, Any], org_id: str = "org_123"
) -> None:
    """What POST /events stores."""
    now = datetime.now(UTC)
    async with flowline_connection(engine) as conn:
        await posted_events.store(
            conn, events.posted(new_id(), event_type, org_id, data, now), None, now
        )


async def run_status(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list(
            (await conn.execute(select(runs.c.status).order_by(runs.c.created_at))).scalars()
        )


async def the_run(engine: AsyncEngine) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(runs))).one()


# the route


async def test_an_event_is_accepted_stored_and_queued(api: InProcessApi, pool: Pool) -> None:
    answer = await api.client.post(
        "/events", json={"type": "order.paid", "data": {"total": 5}, "org_id": "org_1"}
    )
    assert answer.status_code == 202, answer.text
    event_id = answer.json()["event_id"]
    assert answer.json()["status"] == "accepted"
    stored = await pool.fetchrow("SELECT * FROM received_events")
    assert (str(stored["id"]), stored["org_id"], stored["type"]) == (
        event_id,
        "org_1",
        "order.paid",
    )
    queued = await pool.fetchrow("SELECT event_type, payload FROM outbox")
    assert queued["event_type"] == events.POSTED
    assert queued["payload"]["event_type"] == "order.paid"
    assert queued["payload"]["data"] == {"total": 5}


async def test_the_same_id_or_idempotency_key_gets_the_first_answer(
    api: InProcessApi, pool: Pool
) -> None:
    body = {"type": "order.paid", "data": {}, "org_id": "org_1", "id": "pay-1"}
    accepted_before = _accepted()
    first = await api.client.post("/events", json=body)
    again = await api.client.post("/events", json={**body, "data": {"x": 1}})
    by_header = await api.client.post(
        "/events", json={**body, "id": None}, headers={"Idempotency-Key": "pay-1"}
    )
    elsewhere = await api.client.post("/events", json={**body, "org_id": "org_2"})
    assert [r.status_code for r in (first, again, by_header, elsewhere)] == [202] * 4
    assert again.json() == first.json() == by_header.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert elsewhere.json()["event_id"] != first.json()["event_id"]
    assert await pool.fetchval("SELECT count(*) FROM received_events") == 2
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 2
    assert _accepted() - accepted_before == 2


async def test_concurrent_repeats_of_an_id_store_one_event(api: InProcessApi, pool: Pool) -> None:
    body = {"type": "order.paid", "data": {}, "org_id": "org_1", "id": "pay-2"}
    answers = await asyncio.gather(*(api.client.post("/events", json=body) for _ in range(6)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["event_id"] for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_events_older_than_the_retention_are_forgotten(
    engine: AsyncEngine, pool: Pool
) -> None:
    old_time = datetime.now(UTC) - timedelta(days=8)
    async with flowline_connection(engine) as conn:
        old = events.posted(new_id(), "order.paid", "org_1", {}, old_time)
        await posted_events.store(conn, old, "old", old_time)
    await post_event(engine, "order.paid", {})
    assert await posted_events.forget_old(pool, timedelta(days=7)) == 1
    [kept] = await pool.fetch("SELECT dedup_key FROM received_events")
    assert kept["dedup_key"] is None


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({"type": "Order Paid", "data": {}}, {}, "type"),
        ({"type": "form_submitted", "data": {}}, {}, "type"),
        ({"type": "order.paid"}, {}, "data"),
        ({"type": "order.paid", "data": []}, {}, "data"),
        ({"type": "order.paid", "data": {}, "id": "a"}, {"Idempotency-Key": "b"}, "id"),
    ],
)
async def test_a_bad_event_is_a_422_naming_the_field(
    api: InProcessApi, pool: Pool, body: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    answer = await api.client.post("/events", json={"org_id": "org_1", **body}, headers=headers)
    assert answer.status_code == 422, answer.text
    assert field in answer.text
    assert await pool.fetchval("SELECT count(*) FROM received_events") == 0


async def test_only_an_admin_key_may_post_events_for_its_organisation(api: InProcessApi) -> None:
    made = {}
    for scope in ("submit", "admin"):
        answer = await api.client.post("/api-keys", json={"org_id": "org_1", "scopes": [scope]})
        made[scope] = {"Authorization": f"Bearer {answer.json()['key']}"}
    event = {"type": "order.paid", "data": {}}
    refused = await api.client.post("/events", json=event, headers=made["submit"])
    taken = await api.client.post("/events", json=event, headers=made["admin"])
    other = await api.client.post(
        "/events", json={**event, "org_id": "org_2"}, headers=made["admin"]
    )
    assert (refused.status_code, taken.status_code, other.status_code) == (403, 202, 403)
    assert "admin" in refused.text


# the worker


async def test_an_event_starts_the_workflows_of_its_type(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    await create_workflow(
        engine,
        {
            "trigger": {
                "type": "order.paid",
                "conditions": {"path": "data.total", "op": ">", "value": 10},
            },
            "initial_step_id": "thanks",
            "steps": [email_step("thanks", "Paid {event_type} {data.total}")],
        },
    )
    big, small = unique_email(), unique_email()
    await post_event(engine, "order.paid", {"email": big, "total": 50})
    await post_event(engine, "order.paid", {"email": small, "total": 5})
    await post_event(engine, "order.refunded", {"email": small, "total": 50})
    await publish_all(engine, settings)
    async with running_worker(settings):
        [mail] = await eventually(lambda: smtp.to(big), what="the order's email")
    assert mail.message["Subject"] == "Paid order.paid 50"
    assert smtp.to(small) == []
    run = await the_run(engine)
    assert (run.status, run.submission_id, run.context["event_type"]) == (
        "completed",
        None,
        "order.paid",
    )


async def test_a_run_waits_for_its_event_and_ignores_the_others(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    await create_workflow(engine, confirmation_flow())
    person = unique_email()
    submission_id, _ = await submit(engine, {"email": person})
    await post_event(engine, "email.confirmed", {"submission_id": str(submission_id)}, "org_9")
    await publish_all(engine, settings)
    async with running_worker(settings):
        await eventually(lambda: _status_is(engine, "waiting"), what="the run to wait")
        await post_event(engine, "email.confirmed", {"submission_id": "another"})
        await post_event(engine, "email.other", {"submission_id": str(submission_id)})
        await post_event(
            engine, "email.confirmed", {"submission_id": str(submission_id), "name": "Ada"}
        )
        await publish_all(engine, settings)
        [mail] = await eventually(lambda: smtp.to(person), what="the welcome email")
    assert mail.message["Subject"] == "Welcome Ada"
    run = await the_run(engine)
    assert run.status == "completed"
    assert run.context["steps"]["confirm"]["timed_out"] is False
    assert run.context["steps"]["confirm"]["event"]["data"]["name"] == "Ada"
    assert len(smtp.to(person)) == 1


async def _status_is(engine: AsyncEngine, status: str) -> bool:
    return await run_status(engine) == [status]


async def test_an_event_that_came_before_the_wait_resumes_the_run(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    """The event is kept: the run finds it when it begins to wait. One received before the
    run's own submission is not taken."""
    await create_workflow(engine, confirmation_flow())
    person = unique_email()
    submission_id, _ = await submit(engine, {"email": person})
    async with flowline_connection(engine) as conn:  # the same value, before the submission
        earlier = datetime(2020, 1, 1, tzinfo=UTC)
        data = {"submission_id": str(submission_id), "name": "Old"}
        old = events.posted(new_id(), "email.confirmed", "org_123", data, earlier)
        await posted_events.store(conn, old, None, earlier)
    await post_event(
        engine, "email.confirmed", {"submission_id": str(submission_id), "name": "Early"}
    )
    await publish_all(engine, settings)
    async with running_worker(settings):
        [mail] = await eventually(lambda: smtp.to(person), what="the welcome email")
    assert mail.message["Subject"] == "Welcome Early"
    assert (await the_run(engine)).status == "completed"


async def test_a_wait_that_times_out_takes_the_timeout_branch(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    await create_workflow(engine, confirmation_flow(timeout="PT0.5S"))
    person = unique_email()
    await submit(engine, {"email": person})
    await publish_all(engine, settings)
    async with running_worker(settings):
        [mail] = await eventually(lambda: smtp.to(person), what="the reminder")
    assert mail.message["Subject"] == "Please confirm"
    run = await the_run(engine)
    assert run.status == "completed"
    assert run.context["steps"]["confirm"] == {"event": None, "timed_out": True, "actions": []}


def _accepted() -> float:
    return metrics.REGISTRY.get_sample_value("flowline_events_accepted_total") or 0.0
