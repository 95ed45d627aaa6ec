"""GET /tickets, GET /tasks and POST /tasks/{id}/complete against a real API process, with the
rows they read written straight into the test's database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import httpx
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Stack
from tests.support.flows import create_workflow, publish_all, running_worker, submit
from tests.support.waiting import eventually
from workflow_core import events
from workflow_core.ids import new_id
from workflow_core.persistence.tables import outbox, runs, tasks, tickets
from workflow_core.settings import Settings

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    stack.start_api()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        yield client


async def make_run(
    engine: AsyncEngine, *, status: str = "waiting", error: str | None = None, step_seq: int = 2
) -> UUID:
    workflow_id = await create_workflow(engine)
    run_id = new_id()
    async with engine.begin() as conn:
        await conn.execute(
            insert(runs).values(
                id=run_id,
                workflow_id=workflow_id,
                workflow_version=1,
                event_id=new_id(),
                org_id="org_123",
                status=status,
                current_step_id="review",
                step_seq=step_seq,
                context={},
                error=error,
            )
        )
    return run_id


async def make_task(engine: AsyncEngine, **values: Any) -> UUID:
    """A task row: a pending human task of no run unless `values` say otherwise."""
    task_id = new_id()
    row = {
        "id": task_id,
        "kind": "human",
        "title": "Review the request",
        "status": "pending",
        "org_id": "org_123",
        "step_id": "review",
        "step_seq": 2,
        **values,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(tasks).values(row))
    return task_id


async def make_ticket(engine: AsyncEngine, **values: Any) -> UUID:
    ticket_id = new_id()
    row = {
        "id": ticket_id,
        "subject": "Help",
        "status": "open",
        "priority": "normal",
        "org_id": "org_123",
        "fields": {},
        **values,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(tickets).values(row))
    return ticket_id


async def resume_events(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        found = await conn.execute(
            select(outbox.c.payload).where(outbox.c.event_type == events.RUN_RESUME)
        )
        return [row.payload for row in found]


async def task_row(engine: AsyncEngine, task_id: UUID) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(tasks).where(tasks.c.id == task_id))).one()


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()]


# tickets


async def test_tickets_are_listed_newest_first_and_filtered(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    run_id = new_id()
    first = await make_ticket(engine, run_id=run_id, created_at=T0)
    second = await make_ticket(engine, status="resolved", created_at=T0 + timedelta(seconds=1))
    third = await make_ticket(
        engine, org_id="org_456", run_id=run_id, created_at=T0 + timedelta(seconds=2)
    )
    first_, second_, third_ = str(first), str(second), str(third)

    assert ids(await client.get("/tickets")) == [third_, second_, first_]
    assert ids(await client.get("/tickets", params={"org_id": "org_123"})) == [second_, first_]
    assert ids(await client.get("/tickets", params={"status": "open"})) == [third_, first_]
    assert ids(await client.get("/tickets", params={"run_id": str(run_id)})) == [third_, first_]
    assert ids(await client.get("/tickets", params={"limit": 1, "offset": 1})) == [second_]
    assert ids(await client.get("/tickets", params={"org_id": "org_789"})) == []
    for bad in ({"status": "new"}, {"run_id": "nope"}, {"limit": 0}, {"offset": -1}):
        assert (await client.get("/tickets", params=bad)).status_code == 422, bad


async def test_a_ticket_is_read_by_its_id(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    ticket_id = await make_ticket(
        engine, subject="Engine stuck", assignee="ops@example.com", fields={"plan": "pro"}
    )

    response = await client.get(f"/tickets/{ticket_id}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == str(ticket_id)
    assert (body["subject"], body["assignee"], body["fields"]) == (
        "Engine stuck",
        "ops@example.com",
        {"plan": "pro"},
    )
    assert (body["status"], body["priority"], body["org_id"]) == ("open", "normal", "org_123")
    missing = await client.get(f"/tickets/{new_id()}")
    assert missing.status_code == 404
    assert "no ticket with id" in missing.json()["detail"]
    assert (await client.get("/tickets/not-a-uuid")).status_code == 422


# tasks


async def test_tasks_are_listed_newest_first_and_filtered(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    run_id = await make_run(engine)
    human = await make_task(engine, run_id=run_id, assignee="ann", created_at=T0)
    todo = await make_task(
        engine, kind="todo", assignee="bob", created_at=T0 + timedelta(seconds=1)
    )
    done = await make_task(
        engine,
        kind="todo",
        status="completed",
        assignee="ann",
        org_id="org_456",
        created_at=T0 + timedelta(seconds=2),
    )
    timed_out = await make_task(
        engine, run_id=run_id, status="timed_out", created_at=T0 + timedelta(seconds=3)
    )
    human_, todo_, done_, timed_out_ = map(str, (human, todo, done, timed_out))

    def listed(**params: Any) -> Any:
        return client.get("/tasks", params=params)

    assert ids(await listed()) == [timed_out_, done_, todo_, human_]
    assert ids(await listed(status="pending")) == [todo_, human_]
    assert ids(await listed(status="pending", kind="human")) == [human_]
    assert ids(await listed(status="timed_out")) == [timed_out_]
    assert ids(await listed(status="cancelled")) == []
    assert ids(await listed(kind="todo")) == [done_, todo_]
    assert ids(await listed(assignee="ann")) == [done_, human_]
    assert ids(await listed(org_id="org_456")) == [done_]
    assert ids(await listed(run_id=str(run_id))) == [timed_out_, human_]
    assert ids(await listed(limit=2, offset=1)) == [done_, todo_]
    for bad in ({"status": "open"}, {"kind": "robot"}, {"run_id": "x"}, {"limit": 501}):
        assert (await client.get("/tasks", params=bad)).status_code == 422, bad

    one = await client.get(f"/tasks/{human}")
    assert one.status_code == 200
    assert one.json()["run_id"] == str(run_id)
    assert (one.json()["kind"], one.json()["status"]) == ("human", "pending")
    assert (await client.get(f"/tasks/{new_id()}")).status_code == 404


# completing a task


async def test_completing_a_human_task_wakes_its_run_through_the_outbox(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    run_id = await make_run(engine, step_seq=2)
    task_id = await make_task(engine, run_id=run_id, step_seq=2)

    response = await client.post(
        f"/tasks/{task_id}/complete",
        json={"outcome": "approved", "data": {"note": "ok", "n": [1, 2]}, "completed_by": "ann"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["status"], body["outcome"]) == (str(task_id), "completed", "approved")
    assert (body["data"], body["completed_by"]) == ({"note": "ok", "n": [1, 2]}, "ann")
    assert body["completed_at"] is not None
    row = await task_row(engine, task_id)
    assert (row.status, row.outcome, row.data) == ("completed", "approved", body["data"])
    [resume] = await resume_events(engine)
    assert resume == {
        "event_id": resume["event_id"],
        "event_type": "run.resume",
        "run_id": str(run_id),
        "cause": "task",
        "task_id": str(task_id),
        "step_seq": 2,
    }


async def test_a_completed_human_task_resumes_its_run_in_the_worker(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    review = {
        "id": "review",
        "type": "human_task",
        "config": {"title": "Review {data.name}", "assignee": "ann"},
        "transitions": [
            {"to": "open", "conditions": {"path": "task.outcome", "op": "==", "value": "approved"}}
        ],
    }
    open_ticket = {
        "id": "open",
        "type": "auto_action",
        "actions": [
            {
                "type": "create_ticket",
                "config": {
                    "subject": "Approved: {data.name}",
                    "fields": {"note": "{task.data.note}"},
                },
            }
        ],
    }
    await create_workflow(
        engine,
        {
            "trigger": {"type": "form_submitted"},
            "initial_step_id": "review",
            "steps": [review, open_ticket],
        },
    )
    await submit(engine, {"name": "Ada"})
    await publish_all(engine, settings)

    async def waiting_for_ann() -> list[dict[str, Any]]:
        found = await client.get("/tasks", params={"status": "pending", "assignee": "ann"})
        return list(found.json())

    async def ticket() -> Any:
        async with engine.connect() as conn:
            return (await conn.execute(select(tickets))).first()

    # cast: eventually()'s signature cannot infer the result of an async check.
    async with running_worker(settings):
        [task] = await eventually(cast(Any, waiting_for_ann), what="the run to open its task")
        assert (task["kind"], task["title"]) == ("human", "Review Ada")
        response = await client.post(
            f"/tasks/{task['id']}/complete", json={"outcome": "approved", "data": {"note": "fine"}}
        )
        assert response.status_code == 200, response.text
        opened = await eventually(cast(Any, ticket), what="the resumed run to open its ticket")

    assert (opened.subject, opened.fields) == ("Approved: Ada", {"note": "fine"})
    async with engine.connect() as conn:
        run = (await conn.execute(select(runs))).one()
    assert (run.status, run.context["task"]["outcome"]) == ("completed", "approved")


async def test_completing_a_task_twice_is_409(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    task_id = await make_task(engine, run_id=await make_run(engine))
    assert (await client.post(f"/tasks/{task_id}/complete", json={})).status_code == 200

    again = await client.post(f"/tasks/{task_id}/complete", json={"outcome": "rejected"})

    assert again.status_code == 409
    assert f"task {task_id} is already completed (at " in again.json()["detail"]
    assert (await task_row(engine, task_id)).outcome is None
    assert len(await resume_events(engine)) == 1


async def test_of_simultaneous_completions_exactly_one_wins(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    task_id = await make_task(engine, run_id=await make_run(engine))

    answers = await asyncio.gather(
        *(client.post(f"/tasks/{task_id}/complete", json={"outcome": f"o{n}"}) for n in range(8))
    )

    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200] + [409] * 7
    [winner] = [answer.json() for answer in answers if answer.status_code == 200]
    assert (await task_row(engine, task_id)).outcome == winner["outcome"]
    assert len(await resume_events(engine)) == 1


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        ("failed", "review.actions[0] (webhook) failed: HTTP 500", "is failed: review.actions[0]"),
        ("completed", None, "is completed"),
    ],
)
async def test_a_task_whose_run_has_finished_cannot_be_completed(
    client: httpx.AsyncClient, engine: AsyncEngine, status: str, error: str | None, words: str
) -> None:
    run_id = await make_run(engine, status=status, error=error)
    task_id = await make_task(engine, run_id=run_id)

    response = await client.post(f"/tasks/{task_id}/complete", json={"outcome": "approved"})

    assert response.status_code == 409
    assert f"its run {run_id} {words}" in response.json()["detail"]
    assert (await task_row(engine, task_id)).status == "pending"
    assert await resume_events(engine) == []


async def test_a_human_task_of_no_run_cannot_be_completed(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    task_id = await make_task(engine, run_id=None)

    response = await client.post(f"/tasks/{task_id}/complete", json={})

    assert response.status_code == 409
    assert "belongs to no run" in response.json()["detail"]


async def test_a_timed_out_task_cannot_be_completed(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    task_id = await make_task(
        engine, run_id=await make_run(engine), status="timed_out", completed_at=T0
    )

    response = await client.post(f"/tasks/{task_id}/complete", json={})

    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"task {task_id} is already timed out (at {T0.isoformat()})"
    )


async def test_a_todo_task_is_completed_without_waking_any_run(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    task_id = await make_task(engine, kind="todo", run_id=await make_run(engine, status="failed"))

    response = await client.post(f"/tasks/{task_id}/complete")  # no body at all

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert await resume_events(engine) == []


async def test_completing_an_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    unknown = new_id()
    response = await client.post(f"/tasks/{unknown}/complete", json={})
    assert response.status_code == 404
    assert response.json()["detail"] == f"no task with id {unknown}"
    assert (await client.post("/tasks/not-a-uuid/complete", json={})).status_code == 422


BAD_BODIES: list[tuple[Any, str]] = [
    ({"data": [1, 2]}, "data"),
    ({"data": "approved"}, "data"),
    ({"data": {"x": "a\u0000b"}}, "data"),
    ({"outcome": 5}, "outcome"),
    ({"outcome": ""}, "outcome"),
    ({"completed_by": ["ann"]}, "completed_by"),
    ([1, 2], "body"),
]


async def test_a_bad_completion_body_is_422_and_changes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    task_id = await make_task(engine, run_id=await make_run(engine))

    for body, path in BAD_BODIES:
        response = await client.post(f"/tasks/{task_id}/complete", json=body)
        assert response.status_code == 422, (body, response.text)
        assert path in [problem["path"] for problem in response.json()["detail"]], body

    assert (await task_row(engine, task_id)).status == "pending"
    assert await resume_events(engine) == []
