"""An approval flow end to end through the HTTP API, the way the README shows it with curl:
form -> human task -> completed "approved" -> ticket created -> webhook called -> email sent;
and the "rejected" branch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.support.approval import approval_workflow, purchase_form
from tests.support.examples import unique_email
from tests.support.http_receiver import HttpReceiver, http_receiver
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
async def receiver() -> AsyncIterator[HttpReceiver]:
    async with http_receiver() as receiver:
        yield receiver


@pytest.fixture
async def client(stack: Stack, receiver: HttpReceiver) -> AsyncIterator[httpx.AsyncClient]:
    stack.start_api()
    stack.start_worker()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        created = await client.post(
            "/workflows", json=approval_workflow(f"{receiver.url}/purchases")
        )
        assert created.status_code == 201, created.text
        assert created.json()["warnings"] == []
        yield client


async def _pending_task(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    submitted = await client.post("/submit", json=purchase_form(email))
    assert submitted.status_code == 202
    submission_id = submitted.json()["submission_id"]

    async def waiting_run() -> dict[str, Any] | None:
        runs = (await client.get(f"/submissions/{submission_id}")).json()["runs"]
        return runs[0] if runs and runs[0]["status"] == "waiting" else None

    run = await eventually(waiting_run, what="the run to wait for its task")
    [task] = (await client.get("/tasks", params={"status": "pending", "run_id": run["id"]})).json()
    assert task["title"] == "Approve a laptop for Ada" and task["assignee"] == "manager"
    return task


async def test_approved_opens_a_ticket_calls_the_webhook_and_emails(
    client: httpx.AsyncClient, smtp: SmtpServer, receiver: HttpReceiver
) -> None:
    requester = unique_email()
    task = await _pending_task(client, requester)
    [notice] = await eventually(lambda: smtp.to("manager@example.com"), what="the manager's notice")
    assert "Approve a laptop for Ada" in notice.message["Subject"]

    done = await client.post(
        f"/tasks/{task['id']}/complete",
        json={
            "outcome": "approved",
            "data": {"note": "Go ahead.", "by": "Grace"},
            "completed_by": "grace@example.com",
        },
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"

    [mail] = await eventually(lambda: smtp.to(requester), what="the approval email")
    assert mail.message["Subject"] == "Approved: a laptop"
    [call] = receiver.received
    assert call.path == "/purchases"
    assert call.json() == {"item": "a laptop", "amount": 1200, "requested_by": requester}
    [ticket] = (await client.get("/tickets", params={"run_id": task["run_id"]})).json()
    assert ticket["subject"] == "Buy a laptop for Ada" and ticket["priority"] == "high"
    assert ticket["fields"] == {"amount": 1200, "approved_by": "Grace"}
    assert f"ticket {ticket['id']}" in mail.message.get_content()

    run = await _completed(client, task["run_id"])
    assert [s["step_id"] for s in run["steps"]] == ["review", "order", "confirm"]
    assert run["context"]["task"]["outcome"] == "approved"
    again = await client.post(f"/tasks/{task['id']}/complete", json={"outcome": "rejected"})
    assert again.status_code == 409


async def test_rejected_sends_the_decline_and_nothing_else(
    client: httpx.AsyncClient, smtp: SmtpServer, receiver: HttpReceiver
) -> None:
    requester = unique_email()
    task = await _pending_task(client, requester)
    done = await client.post(
        f"/tasks/{task['id']}/complete",
        json={"outcome": "rejected", "data": {"note": "Not this year."}},
    )
    assert done.status_code == 200

    [mail] = await eventually(lambda: smtp.to(requester), what="the decline email")
    assert mail.message["Subject"] == "Declined: a laptop"
    assert "Not this year." in mail.message.get_content()
    run = await _completed(client, task["run_id"])
    assert [s["step_id"] for s in run["steps"]] == ["review", "decline"]
    assert receiver.received == []
    assert (await client.get("/tickets", params={"run_id": task["run_id"]})).json() == []


async def _completed(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """The run once recorded as completed: its last email goes out before the step that sent
    it is recorded, so reading the run right after the email races with that record."""

    async def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = (await client.get(f"/runs/{run_id}")).json()
        return run if run["status"] == "completed" else None

    return await eventually(finished, what=f"run {run_id} to complete")
