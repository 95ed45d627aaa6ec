"""The original design's example, end to end: the API and the worker run as processes, the
email goes through a real SMTP server."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Stack
from tests.support.examples import EXAMPLE_FORM, EXAMPLE_WORKFLOW
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


async def test_example_form_becomes_the_confirmation_email(stack: Stack, smtp: SmtpServer) -> None:
    stack.start_api()
    stack.start_worker()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        created = await client.post("/workflows", json=EXAMPLE_WORKFLOW)
        assert created.status_code == 201, created.text
        workflow_id = created.json()["id"]

        submitted = await client.post("/submit", json=EXAMPLE_FORM)
        assert submitted.status_code == 202, submitted.text
        submission_id = submitted.json()["submission_id"]

        await eventually(
            lambda: smtp.to("user@example.com"), what="the confirmation email", timeout=20
        )
        [mail] = smtp.to("user@example.com")
        assert mail.message["Subject"] == "Form Submission Confirmation - form_submitted"
        assert mail.message["To"] == "user@example.com"
        body = mail.message.get_content().replace("\r\n", "\n")
        assert f"Submission ID: {submission_id}\n" in body
        assert "Template: form_submitted\n" in body
        assert body.startswith("Hello,\n\nYour form submission has been received.")

        async def completed_run() -> dict[str, object] | None:
            found = (await client.get(f"/submissions/{submission_id}")).json()
            runs = found["runs"]
            return runs[0] if runs and runs[0]["status"] == "completed" else None

        run = await eventually(completed_run, what="a completed run")
        assert run["workflow_id"] == workflow_id
        detail = (await client.get(f"/runs/{run['id']}")).json()
        assert detail["status"] == "completed"
        assert detail["workflow_version"] == 1
        [step] = detail["steps"]
        assert step["step_id"] == "step1" and step["status"] == "completed"
        [attempt] = step["actions"]
        assert attempt["action_type"] == "send_email" and attempt["status"] == "succeeded"

        listed = (await client.get("/workflows")).json()
        assert [w["id"] for w in listed] == [workflow_id]
        fetched = await client.get(f"/workflows/{workflow_id}")
        assert fetched.json()["definition"] == EXAMPLE_WORKFLOW["definition"]
    assert len(smtp.received) == 1, stack.logs()
