"""Runs that wait, on real PostgreSQL, Redis and SMTP with the worker in this process: human
tasks (completion, deadline, assignee notification), wait steps, and timers that survive a
worker restart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.examples import unique_email
from tests.support.flows import (
    create_workflow,
    flowline_connection,
    publish_all,
    running_worker,
    submit,
)
from tests.support.pages import text_of
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from workflow_core import events
from workflow_core.ids import new_id
from workflow_core.persistence import outbox, sql
from workflow_core.persistence.tables import run_steps, runs, tasks
from workflow_core.settings import Settings


def approval_definition(
    *, due_in: str | None = None, assignee_email: str | None = None
) -> dict[str, Any]:
    review_config: dict[str, Any] = {
        "assignee": "reviewer@example.com",
        "title": "Review {data.name}'s request",
    }
    if due_in:
        review_config["due_in"] = due_in
    if assignee_email:
        review_config["assignee_email"] = assignee_email

    def email(step_id: str, subject: str) -> dict[str, Any]:
        return {
            "id": step_id,
            "name": step_id,
            "type": "auto_action",
            "actions": [
                {
                    "type": "send_email",
                    "config": {
                        "to_path": "data.email",
                        "subject": subject,
                        "body": "outcome: {task.outcome}",
                    },
                }
            ],
        }

    return {
        "trigger": {
            "type": "form_submitted",
            "conditions": {"path": "template_id", "op": "==", "value": "approval"},
        },
        "initial_step_id": "review",
        "steps": [
            {
                "id": "review",
                "name": "Review",
                "type": "human_task",
                "config": review_config,
                "transitions": [
                    {
                        "to": "approved",
                        "conditions": {"path": "task.outcome", "op": "==", "value": "approved"},
                    },
                    {
                        "to": "escalate",
                        "conditions": {"path": "task.outcome", "op": "==", "value": "timeout"},
                    },
                    {"to": "rejected"},
                ],
            },
            email("approved", "Approved"),
            email("rejected", "Rejected"),
            email("escalate", "Escalated"),
        ],
    }


async def _run(engine: AsyncEngine) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(runs))).one()


async def _task(engine: AsyncEngine) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(tasks))).one()


async def complete_task(
    engine: AsyncEngine, task_id: UUID, outcome: str, data: dict[str, Any]
) -> None:
    """What POST /tasks/{id}/complete writes: the task, and the run's resume event."""
    async with flowline_connection(engine) as conn, conn.transaction():
        row = await sql.fetchrow(
            conn,
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == "pending")
            .values(
                status="completed",
                outcome=outcome,
                data=data,
                completed_by="tester",
                completed_at=datetime.now(UTC),
            )
            .returning(tasks.c.run_id, tasks.c.step_seq),
        )
        assert row is not None
        await outbox.add(
            conn,
            events.run_resume(
                new_id(), row["run_id"], "task", task_id=str(task_id), step_seq=row["step_seq"]
            ),
        )


async def _waiting(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        return (await conn.execute(select(runs.c.status))).scalar() == "waiting"


async def test_a_human_task_pauses_the_run_until_it_is_completed(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    assignee = unique_email()
    await create_workflow(engine, approval_definition(assignee_email=assignee))
    requester = unique_email()
    await submit(engine, {"email": requester, "name": "Ada"}, template_id="approval")
    await publish_all(engine, settings)
    async with running_worker(settings):
        await eventually(lambda: _waiting(engine), what="the run to wait for its task")
        task = await _task(engine)
        assert (task.kind, task.status, task.title, task.assignee) == (
            "human",
            "pending",
            "Review Ada's request",
            "reviewer@example.com",
        )
        [notice] = await eventually(lambda: smtp.to(assignee), what="the assignee's notice")
        assert "Review Ada's request" in notice.message["Subject"]
        assert str(task.id) in text_of(notice.message)

        await complete_task(engine, task.id, "approved", {"note": "fine"})

        [mail] = await eventually(lambda: smtp.to(requester), what="the approval email")
    assert mail.message["Subject"] == "Approved"
    assert "outcome: approved" in mail.message.get_content()
    run = await _run(engine)
    assert run.status == "completed"
    assert run.context["task"]["outcome"] == "approved"
    assert run.context["task"]["data"] == {"note": "fine"}
    async with engine.connect() as conn:
        steps = list(await conn.execute(select(run_steps).order_by(run_steps.c.seq)))
    assert [(s.step_id, s.status, s.transition_to) for s in steps] == [
        ("review", "completed", "approved"),
        ("approved", "completed", None),
    ]


async def test_a_task_past_its_deadline_times_out_and_the_run_escalates(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    await create_workflow(engine, approval_definition(due_in="PT0.5S"))
    requester = unique_email()
    await submit(engine, {"email": requester, "name": "Ada"}, template_id="approval")
    await publish_all(engine, settings)
    async with running_worker(settings):
        [mail] = await eventually(lambda: smtp.to(requester), what="the escalation email")
    assert mail.message["Subject"] == "Escalated"
    task = await _task(engine)
    assert (task.status, task.outcome) == ("timed_out", "timeout")
    assert (await _run(engine)).status == "completed"


async def test_a_wait_step_and_a_deadline_fire_after_the_worker_was_restarted(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    """The wake-ups live in PostgreSQL: a worker that was not running when they fell due
    resumes the runs when it starts."""
    await create_workflow(
        engine,
        {
            "trigger": {
                "type": "form_submitted",
                "conditions": {"path": "template_id", "op": "==", "value": "wait"},
            },
            "initial_step_id": "pause",
            "steps": [
                {
                    "id": "pause",
                    "type": "wait",
                    "config": {"for": "PT1S"},
                    "transitions": [{"to": "after"}],
                },
                {
                    "id": "after",
                    "type": "auto_action",
                    "actions": [
                        {
                            "type": "send_email",
                            "config": {
                                "to_path": "data.email",
                                "subject": "waited",
                                "body": "done",
                            },
                        }
                    ],
                },
            ],
        },
    )
    await create_workflow(engine, approval_definition(due_in="PT1S"))
    waiter, requester = unique_email(), unique_email()
    await submit(engine, {"email": waiter}, template_id="wait")
    await submit(engine, {"email": requester, "name": "Bo"}, template_id="approval")
    await publish_all(engine, settings)

    async with running_worker(settings):

        async def both_waiting() -> bool:
            async with engine.connect() as conn:
                statuses = list((await conn.execute(select(runs.c.status))).scalars())
            return statuses == ["waiting", "waiting"]

        await eventually(both_waiting, what="the runs to wait")
    before = datetime.now(UTC)
    assert smtp.received == []  # the worker is gone before anything fell due

    async with running_worker(settings):
        await eventually(lambda: smtp.to(waiter) and smtp.to(requester), what="both wake-ups")
    assert [m.message["Subject"] for m in smtp.to(waiter)] == ["waited"]
    assert [m.message["Subject"] for m in smtp.to(requester)] == ["Escalated"]
    assert all(m.at >= before.timestamp() for m in smtp.received)
