"""Parallel steps on real PostgreSQL, Redis and SMTP with the worker in this process: both
branches joined, a branch waiting on a task while the other goes on, a failing branch, and
`any` cancelling the branch still waiting."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import SettingsFactory
from tests.integration.test_events import post_event
from tests.integration.test_waiting_runs import complete_task
from tests.support.examples import unique_email
from tests.support.flows import (
    create_workflow,
    publish_all,
    run_worker_until_drained,
    running_worker,
    submit,
)
from tests.support.parallel_flows import (
    email_step,
    parallel_definition,
    review_step,
    webhook_step,
)
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from workflow_core.persistence.tables import event_waits, run_steps, runs, tasks, timers
from workflow_core.settings import Settings


async def _run(engine: AsyncEngine) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(runs))).one()


def _status_is(engine: AsyncEngine, status: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        async with engine.connect() as conn:
            return (await conn.execute(select(runs.c.status))).scalar() == status

    return check


async def _steps(engine: AsyncEngine) -> list[tuple[int, str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(run_steps).order_by(run_steps.c.seq))
        return [(row.seq, row.step_id, row.status) for row in rows]


async def _tasks(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(select(tasks)))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_join_all_waits_for_every_branch_then_goes_on(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    """Branch `a` emails twice; branch `b` waits on a person: the run waits (a's emails sent)
    until the task is completed, then joins and sends the final email."""
    branches = {
        "a": [email_step("a1", "a1", transitions=[{"to": "a2"}]), email_step("a2", "a2")],
        "b": [review_step("b1", transitions=[{"to": "b2"}]), email_step("b2", "b2")],
    }
    await create_workflow(engine, parallel_definition(branches))
    email = unique_email()
    await submit(engine, {"email": email, "name": "Ada"}, template_id="parallel")
    await publish_all(engine, settings)
    async with running_worker(settings):
        await eventually(lambda: len(smtp.to(email)) == 2, what="branch a's emails")
        await eventually(_status_is(engine, "waiting"), what="the run to wait")
        [task] = await _tasks(engine)
        assert task.title == "Review Ada"
        waiting = [(step_id, status) for _, step_id, status in await _steps(engine)]
        assert ("checks", "waiting") in waiting and ("b1", "waiting") in waiting
        await complete_task(engine, task.id, "ok", {})
        await eventually(_status_is(engine, "completed"), what="the run to complete")
    subjects = [mail.message["Subject"] for mail in smtp.to(email)]
    assert sorted(subjects[:3]) == ["a1", "a2", "b2"] and subjects[3:] == ["All checks done"]
    run = await _run(engine)
    state = run.context["steps"]["checks"]
    assert state["status"] == "completed" and state["join"] == "all"
    assert {name: b["status"] for name, b in state["branches"].items()} == {
        "a": "completed",
        "b": "completed",
    }
    assert state["branches"]["a"]["step"] == "a2" and "a1" in run.context["steps"]
    assert run.context["task"]["outcome"] == "ok"
    steps = await _steps(engine)
    assert [s[1] for s in steps[:3]] == ["checks", "a1", "b1"]  # branches numbered in order
    assert {s[1] for s in steps} == {"checks", "a1", "a2", "b1", "b2", "done"}
    assert all(status == "completed" for _, _, status in steps)
    assert len({seq for seq, _, _ in steps}) == 6 == run.step_seq


async def test_a_failing_branch_fails_the_run_and_cancels_the_waiting_one(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    branches = {
        "wait": [review_step("approve")],
        "hook": [
            email_step("hello", "hello", transitions=[{"to": "call"}]),
            webhook_step("call", f"http://127.0.0.1:{_closed_port()}/hook"),
        ],
    }
    await create_workflow(engine, parallel_definition(branches))
    email = unique_email()
    await submit(engine, {"email": email, "name": "Bo"}, template_id="parallel")
    await publish_all(engine, settings)
    async with running_worker(settings):
        await eventually(_status_is(engine, "failed"), what="the run to fail")
    run = await _run(engine)
    assert "parallel step 'checks', branch 'hook'" in run.error
    assert "call.actions[0] (webhook) failed" in run.error
    assert [mail.message["Subject"] for mail in smtp.to(email)] == ["hello"]  # no final email
    [task] = await _tasks(engine)
    assert task.status == "cancelled"
    branches_state = run.context["steps"]["checks"]["branches"]
    assert branches_state["wait"]["status"] == "cancelled"
    assert branches_state["hook"]["status"] == "failed"
    assert ("checks", "failed") in [(s[1], s[2]) for s in await _steps(engine)]


async def test_join_any_goes_on_with_the_first_branch_and_cancels_the_task(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    branches = {
        "person": [
            {**review_step("sign"), "config": {"title": "Sign", "due_in": "PT1H"}},
        ],
        "robot": [email_step("auto", "auto")],
    }
    await create_workflow(engine, parallel_definition(branches, join="any"))
    email = unique_email()
    await submit(engine, {"email": email, "name": "Cy"}, template_id="parallel")
    await publish_all(engine, settings)
    async with running_worker(settings):
        await eventually(_status_is(engine, "completed"), what="the run to complete")
    assert [mail.message["Subject"] for mail in smtp.to(email)] == ["auto", "All checks done"]
    [task] = await _tasks(engine)
    assert task.status == "cancelled"
    async with engine.connect() as conn:
        assert list(await conn.execute(select(timers).where(timers.c.fired_at.is_(None)))) == []
    state = (await _run(engine)).context["steps"]["checks"]
    assert state["branches"]["person"]["status"] == "cancelled"
    assert state["branches"]["robot"]["status"] == "completed"


async def test_a_branch_left_running_by_a_dead_worker_goes_on_without_sending_twice(
    engine: AsyncEngine, make_settings: SettingsFactory, smtp: SmtpServer
) -> None:
    """Branch `a` sent both its emails; the worker died before it recorded that a2 was done
    (as if: the run is `running`, branch a still in a2, a2's email in the ledger). The sweep
    wakes the run: a2's email is not sent again, branch a completes, the run waits for b's
    task, and its completion joins the branches."""
    settings = make_settings(event_reconcile_seconds=1)
    branches = {
        "a": [email_step("a1", "a1", transitions=[{"to": "a2"}]), email_step("a2", "a2")],
        "b": [review_step("b1")],
    }
    await create_workflow(engine, parallel_definition(branches))
    email = unique_email()
    await submit(engine, {"email": email, "name": "Di"}, template_id="parallel")
    await publish_all(engine, settings)
    await run_worker_until_drained(settings)
    run = await _run(engine)
    assert run.status == "waiting" and len(smtp.to(email)) == 2
    state = run.context["steps"]["checks"]
    assert state["branches"]["a"] == {"status": "completed", "step": "a2", "seq": 4}
    state["branches"]["a"]["status"] = "running"
    quiet = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, 5)
    async with engine.begin() as conn:
        await conn.execute(
            update(runs)
            .where(runs.c.id == run.id)
            .values(status="running", owner="died/0", updated_at=quiet, context=run.context)
        )

    async with running_worker(settings):
        await eventually(_status_is(engine, "waiting"), timeout=30, what="the sweep's recovery")
        [task] = await _tasks(engine)
        await complete_task(engine, task.id, "ok", {})
        await eventually(_status_is(engine, "completed"), what="the run to complete")
    assert [mail.message["Subject"] for mail in smtp.to(email)] == ["a1", "a2", "All checks done"]
    branches_state = (await _run(engine)).context["steps"]["checks"]["branches"]
    assert [b["status"] for b in branches_state.values()] == ["completed", "completed"]


async def test_branches_retrying_their_emails_both_go_on_and_join(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    """Both branches' emails meet a passing refusal: each branch waits on its own retry timer,
    the two wake-ups come together (one worker at a time drives the run, the other is put
    off), and each email is sent once before the join's."""
    retry = {"max_attempts": 5, "initial_delay": 0.3, "max_delay": 0.3}

    def retried(step_id: str) -> dict[str, Any]:
        step = email_step(step_id, step_id)
        step["actions"][0]["retry"] = retry
        return step

    await create_workflow(engine, parallel_definition({"a": [retried("a1")], "b": [retried("b1")]}))
    email = unique_email()
    await submit(engine, {"email": email, "name": "Ed"}, template_id="parallel")
    await publish_all(engine, settings)
    smtp.behaviour.refuse_rcpt = "451 4.3.0 try later"
    try:
        async with running_worker(settings):
            await eventually(_status_is(engine, "waiting"), what="both branches to wait")
            smtp.behaviour.refuse_rcpt = None
            await eventually(_status_is(engine, "completed"), what="the run to complete")
    finally:
        smtp.behaviour.refuse_rcpt = None
    subjects = [mail.message["Subject"] for mail in smtp.to(email)]
    assert sorted(subjects[:2]) == ["a1", "b1"] and subjects[2:] == ["All checks done"]


async def test_a_wake_up_finding_the_run_driven_elsewhere_is_put_off(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    """While another worker drives the run (`running`), a branch's wake-up waits on a timer of
    its own, again and again, and goes on once the run rests."""
    branches = {"a": [email_step("a1", "a1")], "b": [review_step("b1")]}
    await create_workflow(engine, parallel_definition(branches))
    email = unique_email()
    await submit(engine, {"email": email, "name": "Flo"}, template_id="parallel")
    await publish_all(engine, settings)
    await run_worker_until_drained(settings)
    run = await _run(engine)
    assert run.status == "waiting"
    async with engine.begin() as conn:  # as if another worker were driving it
        await conn.execute(update(runs).where(runs.c.id == run.id).values(status="running"))

    async def put_off() -> bool:
        async with engine.connect() as conn:
            kinds = (await conn.execute(select(timers.c.kind))).scalars().all()
        return kinds.count("task") >= 2  # put off at least twice

    async with running_worker(settings):
        [task] = await _tasks(engine)
        await complete_task(engine, task.id, "ok", {})
        await eventually(put_off, what="the wake-up to be put off")
        assert (await _run(engine)).status == "running"
        async with engine.begin() as conn:  # the other worker is done with it
            await conn.execute(update(runs).where(runs.c.id == run.id).values(status="waiting"))
        await eventually(_status_is(engine, "completed"), what="the run to complete")
    assert [mail.message["Subject"] for mail in smtp.to(email)] == ["a1", "All checks done"]


def _confirmation(step_id: str) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "wait_for_event",
        "config": {
            "event": "email.confirmed",
            "match": {"path": "data.submission_id", "equals": "{submission_id}"},
        },
    }


async def test_a_branch_waits_for_its_event_while_the_other_goes_on(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    branches = {"confirm": [_confirmation("confirmed")], "hello": [email_step("hi", "hi")]}
    await create_workflow(engine, parallel_definition(branches))
    email = unique_email()
    submission_id, _ = await submit(engine, {"email": email, "name": "Gus"}, template_id="parallel")
    await publish_all(engine, settings)
    async with running_worker(settings):
        await eventually(_status_is(engine, "waiting"), what="the run to wait for its event")
        assert [mail.message["Subject"] for mail in smtp.to(email)] == ["hi"]
        await post_event(engine, "email.confirmed", {"submission_id": str(submission_id)})
        await publish_all(engine, settings)
        await eventually(_status_is(engine, "completed"), what="the run to complete")
    assert [mail.message["Subject"] for mail in smtp.to(email)] == ["hi", "All checks done"]
    run = await _run(engine)
    assert run.context["steps"]["confirmed"]["timed_out"] is False


async def test_join_any_drops_the_event_wait_of_the_branch_it_cancels(
    engine: AsyncEngine, settings: Settings, smtp: SmtpServer
) -> None:
    branches = {"confirm": [_confirmation("confirmed")], "hello": [email_step("hi", "hi")]}
    await create_workflow(engine, parallel_definition(branches, join="any"))
    email = unique_email()
    await submit(engine, {"email": email, "name": "Hal"}, template_id="parallel")
    await publish_all(engine, settings)
    async with running_worker(settings):
        await eventually(_status_is(engine, "completed"), what="the run to complete")
    assert [mail.message["Subject"] for mail in smtp.to(email)] == ["hi", "All checks done"]
    async with engine.connect() as conn:
        assert list(await conn.execute(select(event_waits))) == []
        assert list(await conn.execute(select(timers).where(timers.c.fired_at.is_(None)))) == []
