"""create_ticket, update_ticket, create_task and update_task through the real pipeline (outbox,
relay, Redis stream, worker in this process, PostgreSQL): the rows they write, what the run's
context shows, idempotency under redelivery, and how a bad reference fails the run."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.flows import (
    create_workflow,
    publish_all,
    run_rows,
    run_worker_until_drained,
    submit,
)
from workflow_core import events
from workflow_core.actions.base import ActionCall
from workflow_core.adapters.streams import StreamKeys
from workflow_core.errors import PermanentActionError
from workflow_core.ids import derived_id, effect_key, new_id, run_id_for
from workflow_core.persistence.pool import Pool
from workflow_core.persistence.records import DbRecords
from workflow_core.persistence.tables import outbox, run_actions, tasks, tickets
from workflow_core.settings import Settings

FORM = {
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "message": "The engine\nis stuck",
    "owner": "support@example.com",
    "phone": "+44 20 7946 0000",
}


def action(action_type: str, **config: Any) -> dict[str, Any]:
    return {"type": action_type, "config": config}


def auto(step_id: str, *actions: dict[str, Any], to: str | None = None) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "auto_action",
        "actions": list(actions),
        "transitions": [{"to": to}] if to else [],
    }


def flow(*steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "trigger": {"type": "form_submitted"},
        "initial_step_id": steps[0]["id"],
        "steps": list(steps),
    }


SUPPORT_FLOW = flow(
    auto(
        "open",
        action(
            "create_ticket",
            subject="Help for {data.name}",
            description="{data.message}",
            priority="high",
            assignee="{data.owner}",
            fields={"email": "{data.email}", "plan": "basic", "tags": ["{data.name}", 1]},
        ),
        action(
            "create_task",
            title="Call {data.name}",
            description="About: {data.message}",
            assignee="{data.owner}",
            due_in="P1D",
            fields={"phone": "{data.phone}"},
        ),
        to="triage",
    ),
    auto(
        "triage",
        action(
            "update_ticket",
            ticket_id="{steps.open.ticket_id}",
            status="pending",
            fields={"plan": "pro", "triaged_by": "{data.owner}"},
        ),
        action(
            "update_task",
            task_id_path="steps.open.task_id",
            status="completed",
            fields={"called": True},
        ),
        to="close",
    ),
    auto(
        "close",
        action(
            "update_ticket",
            ticket_id_path="steps.open.ticket_id",
            status="resolved",
            assignee="{data.email}",
        ),
    ),
)


async def rows(engine: AsyncEngine, table: Any, order: Any = None) -> list[Any]:
    async with engine.connect() as conn:
        query = select(table).order_by(table.c.created_at if order is None else order)
        return list(await conn.execute(query))


async def run_flow(
    engine: AsyncEngine, settings: Settings, definition: dict[str, Any], **data: Any
) -> Any:
    """Run `definition` for one submission of FORM (with `data`) to its end; the run row."""
    await create_workflow(engine, definition)
    await submit(engine, {**FORM, **data})
    await publish_all(engine, settings)
    await run_worker_until_drained(settings)
    [run] = await run_rows(engine)
    return run


async def test_a_run_opens_a_ticket_and_a_task_and_updates_both(
    engine: AsyncEngine, settings: Settings
) -> None:
    run = await run_flow(engine, settings, SUPPORT_FLOW)

    assert (run.status, run.error) == ("completed", None)
    [ticket] = await rows(engine, tickets)
    [task] = await rows(engine, tasks)
    assert ticket.id == derived_id(effect_key(run.id, 1, 0))
    assert (ticket.subject, ticket.description) == ("Help for Ada Lovelace", FORM["message"])
    assert (ticket.status, ticket.priority) == ("resolved", "high")
    assert ticket.assignee == "ada@example.com"
    assert ticket.fields == {
        "email": "ada@example.com",
        "plan": "pro",
        "tags": ["Ada Lovelace", 1],
        "triaged_by": "support@example.com",
    }
    assert (ticket.run_id, ticket.org_id, ticket.workflow_id) == (
        run.id,
        "org_123",
        run.workflow_id,
    )
    assert task.id == derived_id(effect_key(run.id, 1, 1))
    assert (task.kind, task.status, task.title) == ("todo", "completed", "Call Ada Lovelace")
    assert task.description == "About: The engine\nis stuck"
    assert task.assignee == "support@example.com"
    assert task.fields == {"phone": FORM["phone"], "called": True}
    assert (task.run_id, task.step_id, task.step_seq) == (run.id, "open", 1)
    assert task.completed_at is not None
    assert abs(task.due_at - task.created_at - timedelta(days=1)) < timedelta(minutes=1)
    steps = run.context["steps"]
    assert steps["open"]["ticket_id"] == str(ticket.id)
    assert steps["open"]["task_id"] == str(task.id)
    assert steps["open"]["ticket"]["status"] == "open"
    assert steps["triage"]["ticket"]["fields"]["plan"] == "pro"
    assert steps["close"]["ticket_id"] == str(ticket.id)
    assert steps["close"]["ticket"]["status"] == "resolved"


async def test_a_todo_task_does_not_pause_its_run(engine: AsyncEngine, settings: Settings) -> None:
    run = await run_flow(
        engine,
        settings,
        flow(auto("todo", action("create_task", title="Follow up"), to="after"), auto("after")),
    )

    assert (run.status, run.current_step_id) == ("completed", "after")
    [task] = await rows(engine, tasks)
    assert (task.kind, task.status, task.due_at, task.completed_at) == (
        "todo",
        "pending",
        None,
        None,
    )


async def test_a_redelivered_event_opens_no_second_ticket_or_task(
    engine: AsyncEngine, settings: Settings, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    await create_workflow(engine, SUPPORT_FLOW)
    _, event_id = await submit(engine, FORM)
    await publish_all(engine, settings)
    async with engine.connect() as conn:
        row = (await conn.execute(select(outbox).where(outbox.c.event_id == event_id))).one()
    event = events.Event(row.event_id, row.event_type, row.payload)
    fields: dict[FieldT, EncodableT] = {key: value for key, value in event.to_fields().items()}
    await redis.xadd(keys.stream, fields)  # the relay repeated it: two deliveries at once

    await run_worker_until_drained(settings)
    await redis.xadd(keys.stream, fields)  # and again, after the run finished
    await run_worker_until_drained(settings)

    assert len(await run_rows(engine)) == 1
    assert len(await rows(engine, tickets)) == 1
    assert len(await rows(engine, tasks)) == 1


async def test_a_ticket_made_by_an_attempt_that_crashed_is_found_not_made_again(
    engine: AsyncEngine, settings: Settings
) -> None:
    """The worker created the ticket and died before recording the step: the retry derives the
    same id, finds the ticket and carries on with it."""
    workflow_id = await create_workflow(engine, SUPPORT_FLOW)
    _, event_id = await submit(engine, FORM)
    run_id = run_id_for(event_id, workflow_id)
    ticket_id = derived_id(effect_key(run_id, 1, 0))
    async with engine.begin() as conn:
        await conn.execute(
            insert(tickets).values(
                id=ticket_id,
                run_id=run_id,
                subject="made before the crash",
                org_id="org_123",
                status="open",
                priority="high",
                fields={"email": "ada@example.com"},
            )
        )
    await publish_all(engine, settings)

    await run_worker_until_drained(settings)

    [ticket] = await rows(engine, tickets)
    assert (ticket.id, ticket.subject, ticket.status) == (
        ticket_id,
        "made before the crash",
        "resolved",
    )
    [run] = await run_rows(engine)
    assert run.context["steps"]["open"]["ticket"]["subject"] == "made before the crash"


async def test_updating_an_unknown_ticket_fails_the_run_with_the_reason(
    engine: AsyncEngine, settings: Settings
) -> None:
    nobody = new_id()
    run = await run_flow(
        engine,
        settings,
        flow(auto("touch", action("update_ticket", ticket_id="{data.ticket}", status="closed"))),
        ticket=str(nobody),
    )

    assert run.status == "failed"
    assert f"no ticket with id {nobody}" in run.error
    assert "touch.actions[0] (update_ticket)" in run.error
    [attempt] = await rows(engine, run_actions, order=run_actions.c.id)
    assert (attempt.status, attempt.attempt) == ("failed", 1)  # permanent: not retried
    assert await rows(engine, tickets) == []


async def test_a_ticket_id_that_is_not_a_uuid_fails_the_run_with_the_reason(
    engine: AsyncEngine, settings: Settings
) -> None:
    run = await run_flow(
        engine,
        settings,
        flow(auto("touch", action("update_ticket", ticket_id_path="data.ticket", priority="low"))),
        ticket="TICKET-42",
    )

    assert run.status == "failed"
    assert "'TICKET-42', which is not a ticket id (a UUID)" in run.error


async def test_a_run_cannot_change_another_organisations_ticket_or_task(
    engine: AsyncEngine, pool: Pool, settings: Settings
) -> None:
    theirs_ticket, theirs_task = new_id(), new_id()
    async with engine.begin() as conn:
        await conn.execute(
            insert(tickets).values(
                id=theirs_ticket,
                subject="theirs",
                status="open",
                priority="normal",
                org_id="org_9",
                fields={},
            )
        )
        await conn.execute(
            insert(tasks).values(
                id=theirs_task, kind="todo", title="theirs", status="pending", org_id="org_9"
            )
        )
    definition = flow(
        auto("touch", action("update_ticket", ticket_id="{data.ticket}", status="closed"))
    )

    run = await run_flow(engine, settings, definition, ticket=str(theirs_ticket))

    assert run.status == "failed"
    assert f"no ticket with id {theirs_ticket} in organisation 'org_123'" in run.error
    with pytest.raises(
        PermanentActionError, match=f"no task with id {theirs_task} in organisation"
    ):
        await DbRecords(pool).update_task(theirs_task, "org_123", {"status": "completed"})
    [ticket] = await rows(engine, tickets)
    [task] = await rows(engine, tasks)
    assert (ticket.status, task.status) == ("open", "pending")


async def test_update_task_refuses_a_human_task(engine: AsyncEngine, settings: Settings) -> None:
    human = new_id()
    async with engine.begin() as conn:
        await conn.execute(
            insert(tasks).values(
                id=human, kind="human", title="Approve", status="pending", org_id="org_123"
            )
        )

    run = await run_flow(
        engine,
        settings,
        flow(auto("close", action("update_task", task_id="{data.task}", status="completed"))),
        task=str(human),
    )

    assert run.status == "failed"
    assert f"task {human} is a human task" in run.error
    [task] = await rows(engine, tasks)
    assert task.status == "pending"


async def test_concurrent_updates_merge_their_fields_without_losing_any(
    engine: AsyncEngine, pool: Pool
) -> None:
    records = DbRecords(pool)
    ticket_id = new_id()
    await records.create_ticket(
        ticket_id,
        ActionCall(
            run_id=new_id(),
            workflow_id=new_id(),
            org_id="org_123",
            submission_id=None,
            step_id="open",
            step_seq=1,
            index=0,
            attempt=1,
            key="test/1/0",
            context={},
        ),
        {"subject": "s", "status": "open", "priority": "normal", "fields": {"kept": True}},
    )

    await asyncio.gather(
        *(
            records.update_ticket(ticket_id, "org_123", {"fields": {f"key{n}": n}})
            for n in range(20)
        )
    )

    async with engine.connect() as conn:
        stored = (await conn.execute(select(tickets.c.fields))).scalar_one()
    assert stored == {"kept": True, **{f"key{n}": n for n in range(20)}}
