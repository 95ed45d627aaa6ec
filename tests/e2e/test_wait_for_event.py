"""wait_for_event end to end with the API and workers as processes: a run waits for its event
through a worker's SIGKILL and is resumed once by the next worker; an event posted before the
run reaches the wait resumes it too; a wait that times out takes its timeout branch."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.support.examples import email_step, unique_email
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


def signup_flow(template_id: str, timeout: str) -> dict[str, Any]:
    """A short pause, then wait for this submission's `email.confirmed` (or time out)."""
    return {
        "name": f"confirm {template_id}",
        "definition": {
            "trigger": {
                "type": "form_submitted",
                "conditions": {"path": "template_id", "op": "==", "value": template_id},
            },
            "initial_step_id": "pause",
            "steps": [
                {
                    "id": "pause",
                    "type": "wait",
                    "config": {"for": "PT1S"},
                    "transitions": [{"to": "confirm"}],
                },
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
        },
    }


async def signed_up(client: httpx.AsyncClient, template_id: str, email: str) -> str:
    answer = await client.post(
        "/submit", json={"template_id": template_id, "data": {"email": email}, "org_id": "org_1"}
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["submission_id"])


async def confirmed(client: httpx.AsyncClient, submission_id: str, name: str) -> None:
    answer = await client.post(
        "/events",
        json={
            "type": "email.confirmed",
            "data": {"submission_id": submission_id, "name": name},
            "org_id": "org_1",
            "id": f"confirm-{submission_id}",
        },
    )
    assert answer.status_code == 202, answer.text


async def the_run(client: httpx.AsyncClient, submission_id: str) -> dict[str, Any] | None:
    runs = (await client.get(f"/submissions/{submission_id}")).json()["runs"]
    if not runs:
        return None
    found: dict[str, Any] = (await client.get(f"/runs/{runs[0]['id']}")).json()
    return found


async def test_a_waiting_run_survives_a_kill_and_takes_its_event_once(
    stack: Stack, smtp: SmtpServer
) -> None:
    stack.start_api()
    first_worker = stack.start_worker("first")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        for template_id, timeout in (("signup", "P3D"), ("quick", "PT2S")):
            created = await client.post("/workflows", json=signup_flow(template_id, timeout))
            assert created.status_code == 201, created.text
            assert created.json()["warnings"] == []
        patient, early, hasty = unique_email(), unique_email(), unique_email()
        waiting_id = await signed_up(client, "signup", patient)

        async def waits_for_its_event() -> dict[str, Any] | None:
            run = await the_run(client, waiting_id)
            ready = run and run["status"] == "waiting" and run["current_step_id"] == "confirm"
            return run if ready else None

        await eventually(waits_for_its_event, what="the run to wait for its event")
        first_worker.kill()  # SIGKILL while the run waits
        stack.start_worker("second")

        # An event posted while the run is still in its pause, before it begins to wait.
        early_id = await signed_up(client, "signup", early)
        posted_at = time.time()
        await confirmed(client, early_id, "Early")
        await confirmed(client, waiting_id, "Patient")
        await confirmed(client, waiting_id, "Patient")  # the same id again: one event
        await signed_up(client, "quick", hasty)

        [welcome] = await eventually(lambda: smtp.to(patient), what="the welcome email")
        [welcome_early] = await eventually(lambda: smtp.to(early), what="the early one's")
        [reminder] = await eventually(lambda: smtp.to(hasty), what="the reminder", timeout=30)
        assert welcome.message["Subject"] == "Welcome Patient"
        assert welcome_early.message["Subject"] == "Welcome Early"
        assert reminder.message["Subject"] == "Please confirm"

        early_run = await the_run(client, early_id)
        assert early_run is not None and early_run["status"] == "completed"
        [confirm_step] = [s for s in early_run["steps"] if s["step_id"] == "confirm"]
        assert datetime.fromisoformat(confirm_step["entered_at"]).timestamp() > posted_at
        run = await eventually(
            lambda: _completed(client, waiting_id), what="the resumed run to complete"
        )
        assert [s["step_id"] for s in run["steps"]] == ["pause", "confirm", "welcome"]
        assert run["context"]["steps"]["confirm"]["event"]["data"]["name"] == "Patient"
    assert len(smtp.to(patient)) == 1
    assert len(smtp.to(early)) == 1 and len(smtp.to(hasty)) == 1


async def _completed(client: httpx.AsyncClient, submission_id: str) -> dict[str, Any] | None:
    run = await the_run(client, submission_id)
    return run if run and run["status"] == "completed" else None
