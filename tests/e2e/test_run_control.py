"""Run control and webhook answers end to end, with the API and a worker as processes: a cancel
racing the completion of the task its run waits for (exactly one wins, and no email follows a
cancel), and a webhook's JSON answer choosing the next email."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.support.examples import email_step, unique_email
from tests.support.http_receiver import Answer, HttpReceiver, http_receiver
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

ROUNDS = 5
DECISION = "steps.ask.response.json.decision"  # the webhook's JSON answer, as data


def _trigger(template_id: str) -> dict[str, Any]:
    return {
        "type": "form_submitted",
        "conditions": {"path": "template_id", "op": "==", "value": template_id},
    }


def review_then_email() -> dict[str, Any]:
    review = {"id": "review", "type": "human_task", "config": {"title": "Review"}}
    return {
        "name": "review, then tell",
        "definition": {
            "trigger": _trigger("review"),
            "initial_step_id": "review",
            "steps": [
                {**review, "transitions": [{"to": "tell"}]},
                email_step("tell", "Reviewed", body="."),
            ],
        },
    }


def ask_then_answer(url: str) -> dict[str, Any]:
    ask = {
        "id": "ask",
        "type": "auto_action",
        "actions": [{"type": "webhook", "config": {"url": url, "body": {"who": "{data.email}"}}}],
        "transitions": [
            {
                "to": "yes",
                "conditions": {
                    "path": "steps.ask.response.json.decision",
                    "op": "==",
                    "value": "yes",
                },
            },
            {"to": "no"},
        ],
    }
    return {
        "name": "ask a service, then answer",
        "definition": {
            "trigger": _trigger("ask"),
            "initial_step_id": "ask",
            "steps": [ask, email_step("yes", "Yes", body="."), email_step("no", "No", body=".")],
        },
    }


@pytest.fixture
async def receiver() -> AsyncIterator[HttpReceiver]:
    async with http_receiver() as receiver:
        yield receiver


@pytest.fixture
async def client(stack: Stack, receiver: HttpReceiver) -> AsyncIterator[httpx.AsyncClient]:
    stack.start_api()
    stack.start_worker()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        for workflow in (review_then_email(), ask_then_answer(f"{receiver.url}/decide")):
            created = await client.post("/workflows", json=workflow)
            assert created.status_code == 201, created.text
        yield client


async def _waiting_task(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    form = {"template_id": "review", "data": {"email": email}, "org_id": "org_123"}
    submission_id = (await client.post("/submit", json=form)).json()["submission_id"]

    async def pending() -> list[dict[str, Any]] | None:
        runs = (await client.get(f"/submissions/{submission_id}")).json()["runs"]
        if not runs or runs[0]["status"] != "waiting":
            return None
        found = await client.get("/tasks", params={"status": "pending", "run_id": runs[0]["id"]})
        return found.json() or None

    [task] = await eventually(pending, what="the run waiting for its task")
    return task


async def test_cancel_races_and_webhook_answers(
    client: httpx.AsyncClient, smtp: SmtpServer, receiver: HttpReceiver
) -> None:
    """One stack for both stories (process starts are the slow part)."""
    await _a_webhooks_json_answer_chooses_the_next_email(client, smtp, receiver)
    await _a_cancel_racing_a_completion_has_one_winner(client, smtp)


async def _a_cancel_racing_a_completion_has_one_winner(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    outcomes: list[tuple[str, str, dict[str, Any]]] = []
    for round_ in range(ROUNDS):
        email = unique_email()
        task = await _waiting_task(client, email)
        calls = [
            client.post(f"/runs/{task['run_id']}/cancel", json={"reason": "race"}),
            client.post(f"/tasks/{task['id']}/complete", json={"outcome": "ok"}),
        ]
        if round_ % 2:  # the other one sent first
            calls.reverse()
        answers = await asyncio.gather(*calls)
        cancel, complete = answers if round_ % 2 == 0 else answers[::-1]
        codes = (cancel.status_code, complete.status_code)
        assert codes in {(200, 409), (409, 200)}, (cancel.text, complete.text)
        outcomes.append(("cancel" if cancel.status_code == 200 else "complete", email, task))

    for winner, email, task in outcomes:
        stored = (await client.get(f"/tasks/{task['id']}")).json()
        if winner == "complete":
            await eventually(lambda e=email: smtp.to(e), what="the email after the completion")
            run = await eventually(lambda t=task: _finished(client, t["run_id"]))
            assert (run["status"], stored["status"]) == ("completed", "completed")
        else:
            run = (await client.get(f"/runs/{task['run_id']}")).json()
            assert (run["status"], run["error"]) == ("cancelled", "cancelled: race")
            assert stored["status"] == "cancelled"
            assert [s["status"] for s in run["steps"]] == ["cancelled"]
    # A cancelled run's task can no longer wake it: no email ever follows. A later run through
    # the same worker shows the worker has gone past everything sent before it.
    later = unique_email()
    last = await _waiting_task(client, later)
    assert (await client.post(f"/tasks/{last['id']}/complete", json={})).status_code == 200
    await eventually(lambda: smtp.to(later), what="a later run's email")
    for winner, email, task in outcomes:
        assert len(smtp.to(email)) == (1 if winner == "complete" else 0), (winner, task)
        again = await client.post(f"/runs/{task['run_id']}/cancel")
        assert again.status_code == 409  # finished either way
        assert "is already" in again.json()["detail"]


async def _finished(client: httpx.AsyncClient, run_id: str) -> dict[str, Any] | None:
    run: dict[str, Any] = (await client.get(f"/runs/{run_id}")).json()
    return run if run["status"] in {"completed", "failed", "cancelled"} else None


async def _a_webhooks_json_answer_chooses_the_next_email(
    client: httpx.AsyncClient, smtp: SmtpServer, receiver: HttpReceiver
) -> None:
    receiver.answer(Answer(200, b'{"decision": "yes", "ticket": 42}', {"ETag": '"v7"'}))
    email = unique_email()
    form = {"template_id": "ask", "data": {"email": email}, "org_id": "org_123"}
    submission_id = (await client.post("/submit", json=form)).json()["submission_id"]

    [mail] = await eventually(lambda: smtp.to(email), what="the email the answer chose")

    assert mail.message["Subject"] == "Yes"
    [run] = (await client.get(f"/submissions/{submission_id}")).json()["runs"]
    shown = await eventually(lambda: _finished(client, run["id"]), what="the run to finish")
    response = shown["context"]["steps"]["ask"]["response"]
    assert response["status"] == 200
    assert response["headers"]["etag"] == '"v7"'
    assert response["json"] == {"decision": "yes", "ticket": 42}
    [attempt] = shown["steps"][0]["actions"]
    assert "json" not in attempt["result"]["response"]  # the history keeps what it kept
    assert [s["step_id"] for s in shown["steps"]] == ["ask", "yes"]
