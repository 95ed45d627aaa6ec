"""POST /runs/{id}/cancel and POST /runs/retry against the API in this process, with the rows
they act on written straight into the test's database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import SettingsFactory
from tests.support.flows import create_workflow, running_worker, submit
from tests.support.http_receiver import Answer, http_receiver
from tests.support.inprocess import in_process_api
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from workflow_core import events
from workflow_core.ids import new_id
from workflow_core.persistence.tables import effects, outbox, run_steps, runs, tasks, timers

ADMIN = "fl_admin_" + uuid.uuid4().hex + uuid.uuid4().hex
OPERATOR = {"Authorization": f"Bearer {ADMIN}"}
T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def client(make_settings: SettingsFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(make_settings(api_admin_key=ADMIN)) as api:
        api.client.headers.update(OPERATOR)
        yield api.client


async def make_run(
    engine: AsyncEngine,
    *,
    status: str = "waiting",
    org_id: str = "org_123",
    error: str | None = None,
    finished_at: datetime | None = None,
    workflow_id: UUID | None = None,
) -> UUID:
    workflow_id = workflow_id or await create_workflow(engine)
    run_id = new_id()
    async with engine.begin() as conn:
        await conn.execute(
            insert(runs).values(
                id=run_id,
                workflow_id=workflow_id,
                workflow_version=1,
                event_id=new_id(),
                org_id=org_id,
                status=status,
                current_step_id="review",
                step_seq=2,
                context={},
                error=error,
                finished_at=finished_at,
            )
        )
        await conn.execute(
            insert(run_steps).values(
                run_id=run_id,
                seq=2,
                step_id="review",
                step_type="human_task",
                status="waiting" if status == "waiting" else "running",
                entered_at=func.now(),
            )
        )
    return run_id


async def open_task(engine: AsyncEngine, run_id: UUID, status: str = "pending") -> UUID:
    task_id = new_id()
    async with engine.begin() as conn:
        await conn.execute(
            insert(tasks).values(
                id=task_id,
                kind="human",
                run_id=run_id,
                title="Review",
                status=status,
                org_id="org_123",
                step_id="review",
                step_seq=2,
            )
        )
        await conn.execute(
            insert(timers).values(
                id=new_id(),
                run_id=run_id,
                kind="task_due",
                due_at=T0,
                payload={"step_seq": 2, "task_id": str(task_id)},
            )
        )
    return task_id


async def row(engine: AsyncEngine, table: Any, row_id: UUID) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(table).where(table.c.id == row_id))).one()


async def count(engine: AsyncEngine, query: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


# cancel


async def test_a_waiting_run_is_cancelled_with_its_task_and_timers(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    run_id = await make_run(engine)
    task_id = await open_task(engine, run_id)

    answer = await client.post(f"/runs/{run_id}/cancel", json={"reason": "wrong team"})

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "run_id": str(run_id),
        "status": "cancelled",
        "error": "cancelled: wrong team",
        "tasks_cancelled": 1,
        "timers_deleted": 1,
    }
    run = (await client.get(f"/runs/{run_id}")).json()
    assert (run["status"], run["error"]) == ("cancelled", "cancelled: wrong team")
    assert run["finished_at"] is not None
    assert [s["status"] for s in run["steps"]] == ["cancelled"]
    assert (await row(engine, tasks, task_id)).status == "cancelled"
    timers_left = select(func.count()).where(timers.c.run_id == run_id)
    assert await count(engine, timers_left) == 0
    # Completing its task now is a conflict, and wakes nothing.
    completing = await client.post(f"/tasks/{task_id}/complete", json={"outcome": "approved"})
    assert completing.status_code == 409
    assert "cancelled" in completing.json()["detail"]
    resumes = select(func.count()).where(outbox.c.event_type == events.RUN_RESUME)
    assert await count(engine, resumes) == 0


async def test_a_cancel_without_a_body_and_a_running_run(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    run_id = await make_run(engine, status="running")
    answer = await client.post(f"/runs/{run_id}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["error"] == "cancelled"


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
async def test_a_finished_run_cannot_be_cancelled(
    client: httpx.AsyncClient, engine: AsyncEngine, status: str
) -> None:
    run_id = await make_run(engine, status=status)
    answer = await client.post(f"/runs/{run_id}/cancel", json={})
    assert answer.status_code == 409
    assert f"is already {status}" in answer.json()["detail"]
    assert (await row(engine, runs, run_id)).status == status


async def test_a_run_whose_task_was_completed_first_is_not_cancelled(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    run_id = await make_run(engine)
    task_id = await open_task(engine, run_id)
    assert (await client.post(f"/tasks/{task_id}/complete", json={})).status_code == 200

    answer = await client.post(f"/runs/{run_id}/cancel")

    assert answer.status_code == 409
    assert "is resuming" in answer.json()["detail"]
    assert (await row(engine, runs, run_id)).status == "waiting"


async def test_cancel_of_an_unknown_or_another_organisations_run_is_404(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    assert (await client.post(f"/runs/{uuid.uuid4()}/cancel")).status_code == 404
    run_id = await make_run(engine, org_id="org_a")
    made = await client.post("/api-keys", json={"org_id": "org_b", "scopes": ["admin"]})
    other = {"Authorization": f"Bearer {made.json()['key']}"}

    answer = await client.post(f"/runs/{run_id}/cancel", headers=other)

    assert answer.status_code == 404
    assert (await row(engine, runs, run_id)).status == "waiting"
    too_long = await client.post(f"/runs/{run_id}/cancel", json={"reason": "x" * 501})
    assert too_long.status_code == 422


# a worker between two actions


async def test_a_run_cancelled_between_two_actions_does_not_take_the_second(
    make_settings: SettingsFactory, engine: AsyncEngine, smtp: SmtpServer
) -> None:
    settings = make_settings(api_admin_key=ADMIN)
    held = asyncio.Event()
    email = {"to_path": "data.email", "subject": "after the call", "body": "."}
    async with http_receiver() as receiver, in_process_api(settings) as api:
        actions = [
            {"type": "webhook", "config": {"url": f"{receiver.url}/slow"}},
            {"type": "send_email", "config": email},
        ]
        step = {"id": "call", "type": "auto_action", "actions": actions}
        trigger = {"type": "form_submitted"}
        await create_workflow(
            engine, {"trigger": trigger, "initial_step_id": "call", "steps": [step]}
        )
        receiver.answer(Answer(200, b'{"ok": true}', held=held))
        await submit(engine, {"email": "late@example.com"})
        async with running_worker(settings):
            await eventually(lambda: receiver.received, what="the webhook call in flight")
            [run] = (await api.client.get("/runs", headers=OPERATOR)).json()
            cancel = await api.client.post(f"/runs/{run['id']}/cancel", headers=OPERATOR)
            assert cancel.status_code == 200, cancel.text
            held.set()  # the receiver answers: the worker finishes the call, and stops there

            async def recorded() -> list[Any]:
                shown = (await api.client.get(f"/runs/{run['id']}", headers=OPERATOR)).json()
                return shown["steps"] if shown["steps"] and shown["steps"][0]["actions"] else []

            [step] = await eventually(recorded, what="the call's attempt in the history")
    assert (step["step_id"], step["status"], step["error"]) == ("call", "cancelled", "cancelled")
    [attempt] = step["actions"]
    assert (attempt["action_type"], attempt["status"]) == ("webhook", "succeeded")
    assert (await row(engine, runs, UUID(run["id"]))).status == "cancelled"
    assert smtp.to("late@example.com") == []
    effects_of_run = select(func.count()).where(effects.c.run_id == UUID(run["id"]))
    assert await count(engine, effects_of_run) == 1  # the call's, done; no email reserved


# retry by filter


async def test_failed_runs_matching_a_filter_are_retried_in_bounded_batches(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    workflow_id = await create_workflow(engine)
    matching = [
        await make_run(
            engine,
            status="failed",
            error="POST https://x.test timed out",
            finished_at=T0 + timedelta(minutes=n),
            workflow_id=workflow_id,
        )
        for n in range(3)
    ]
    other_error = await make_run(
        engine, status="failed", error="refused", finished_at=T0, workflow_id=workflow_id
    )
    too_late = await make_run(
        engine,
        status="failed",
        error="timed out",
        finished_at=T0 + timedelta(hours=2),
        workflow_id=workflow_id,
    )
    waiting = await make_run(engine, workflow_id=workflow_id)
    window = {
        "workflow_id": str(workflow_id),
        "since": T0.isoformat(),
        "until": (T0 + timedelta(hours=1)).isoformat(),
        "error_contains": "timed out",
    }

    first = await client.post("/runs/retry", json={**window, "limit": 2})

    assert first.status_code == 200, first.text
    report = first.json()
    assert (report["matched"], report["retried"], report["truncated"]) == (3, 2, True)
    assert report["run_ids"] == [str(run_id) for run_id in matching[:2]]  # oldest first
    second = (await client.post("/runs/retry", json=window)).json()
    assert (second["matched"], second["retried"], second["truncated"]) == (1, 1, False)
    assert second["run_ids"] == [str(matching[2])]
    for run_id in matching:
        assert (await row(engine, runs, run_id)).status == "waiting"
    for run_id in (other_error, too_late):
        assert (await row(engine, runs, run_id)).status == "failed"
    assert (await row(engine, runs, waiting)).status == "waiting"
    retries = select(func.count()).where(outbox.c.event_type == events.RUN_RESUME)
    assert await count(engine, retries) == 3


async def test_an_organisations_key_retries_its_own_runs_only(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    mine = await make_run(engine, status="failed", org_id="org_a", finished_at=T0)
    theirs = await make_run(engine, status="failed", org_id="org_b", finished_at=T0)
    made = await client.post("/api-keys", json={"org_id": "org_a", "scopes": ["admin"]})
    key = {"Authorization": f"Bearer {made.json()['key']}"}

    refused = await client.post("/runs/retry", json={"org_id": "org_b"}, headers=key)
    assert refused.status_code == 403
    answer = await client.post("/runs/retry", json={}, headers=key)

    assert answer.json()["run_ids"] == [str(mine)]
    assert (await row(engine, runs, theirs)).status == "failed"
    async with engine.begin() as conn:  # nothing left to match: an empty report
        await conn.execute(update(runs).values(status="completed"))
    assert (await client.post("/runs/retry", json={})).json() == {
        "matched": 0,
        "retried": 0,
        "run_ids": [],
        "truncated": False,
    }


@pytest.mark.parametrize(
    "body",
    [
        {"limit": 0},
        {"limit": 1001},
        {"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"},
        {"since": "2030-01-01T00:00:00"},  # no time zone
        {"error_contains": "a\u0000b"},
        {"workflow_id": "not-a-uuid"},
        {"status": "completed"},  # not a field: a typo is refused, not ignored
    ],
)
async def test_a_bad_retry_filter_is_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    answer = await client.post("/runs/retry", json=body)
    assert answer.status_code == 422, answer.text
