"""The limits against amplification, end to end: the API and the worker as processes, emails
through a real SMTP server. A self-looping workflow stops at MAX_EMAILS_PER_RUN, an email with
too many recipients sends nothing, and form data is escaped in an email's HTML part."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.support.examples import EXAMPLE_FORM
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


def workflow(step: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "limits",
        "definition": {
            "trigger": {"type": "form_submitted"},
            "initial_step_id": step["id"],
            "steps": [step],
        },
    }


async def failed_run(client: httpx.AsyncClient, submission_id: str) -> dict[str, Any] | None:
    runs = (await client.get(f"/submissions/{submission_id}")).json()["runs"]
    if not runs or runs[0]["status"] != "failed":
        return None
    run: dict[str, Any] = (await client.get(f"/runs/{runs[0]['id']}")).json()
    return run


async def test_a_self_looping_email_step_stops_at_the_emails_per_run(
    stack: Stack, smtp: SmtpServer
) -> None:
    stack.start_api()
    stack.start_worker()
    loop = {
        "id": "again",
        "type": "auto_action",
        "actions": [
            {
                "type": "send_email",
                "config": {"to_path": "data.email", "subject": "Once more", "body": "{data.name}"},
            }
        ],
        "transitions": [{"to": "again"}],
    }
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        assert (await client.post("/workflows", json=workflow(loop))).status_code == 201
        submitted = await client.post("/submit", json=EXAMPLE_FORM)
        assert submitted.status_code == 202, submitted.text
        run = await eventually(
            lambda: failed_run(client, submitted.json()["submission_id"]),
            what="the looping run to fail",
            timeout=60,
        )
    assert "MAX_EMAILS_PER_RUN allows 25" in run["error"], run["error"]
    # The run is recorded failed after the refusal: nothing can be sent after this point.
    assert len(smtp.to("user@example.com")) == 25, stack.logs()
    assert len(smtp.received) == 25
    assert len(run["steps"]) == 26
    refused = run["steps"][-1]["actions"][-1]
    assert refused["status"] == "failed" and "MAX_EMAILS_PER_RUN" in refused["error"]


async def test_an_email_over_the_recipient_limit_fails_its_run_and_sends_nothing(
    stack: Stack, smtp: SmtpServer
) -> None:
    stack.start_api()
    stack.start_worker()
    step = {
        "id": "tell",
        "type": "auto_action",
        "actions": [
            {
                "type": "send_email",
                "config": {"to": "first@example.com", "subject": "First", "body": "ok"},
            },
            {
                "type": "send_email",
                "config": {"to_path": "data.everyone", "subject": "All", "body": "hi"},
            },
        ],
    }
    everyone = [f"person{i}@example.com" for i in range(200)]
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        assert (await client.post("/workflows", json=workflow(step))).status_code == 201
        submitted = await client.post(
            "/submit", json={**EXAMPLE_FORM, "data": {"everyone": everyone}}
        )
        run = await eventually(
            lambda: failed_run(client, submitted.json()["submission_id"]),
            what="the run to fail",
            timeout=30,
        )
    assert "200 recipients" in run["error"] and "MAX_RECIPIENTS_PER_EMAIL allows 50" in run["error"]
    assert [mail.rcpt_tos for mail in smtp.received] == [["first@example.com"]], stack.logs()


async def test_form_data_is_escaped_in_the_html_part_and_the_template_is_not(
    stack: Stack, smtp: SmtpServer
) -> None:
    stack.start_api()
    stack.start_worker()
    step = {
        "id": "tell",
        "type": "auto_action",
        "actions": [
            {
                "type": "send_email",
                "config": {
                    "to_path": "data.email",
                    "subject": "Hello {data.name}",
                    "body": "Hello {data.name}",
                    "html_body": "<p>Hello <b>{data.name}</b></p>",
                },
            }
        ],
    }
    name = "<script>alert('owned')</script>"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        assert (await client.post("/workflows", json=workflow(step))).status_code == 201
        form = {**EXAMPLE_FORM, "data": {"email": "ada@example.com", "name": name}}
        assert (await client.post("/submit", json=form)).status_code == 202
        await eventually(lambda: smtp.to("ada@example.com"), what="the email", timeout=20)
    [mail] = smtp.to("ada@example.com")
    parts = {part.get_content_type(): part.get_content() for part in mail.message.iter_parts()}
    assert (
        "<p>Hello <b>&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;</b></p>"
        in (parts["text/html"])
    )
    assert "<script>" not in parts["text/html"]
    assert f"Hello {name}" in parts["text/plain"]  # plain text is not HTML: left as it is


async def test_a_form_sent_right_after_its_workflow_is_created_starts_a_run(
    stack: Stack, smtp: SmtpServer
) -> None:
    """Forms that match nothing keep the worker's catalog from reloading on every one (at most
    once a second); a workflow created meanwhile is announced, and the very next form finds it."""
    stack.start_api()
    stack.start_worker()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        for round_ in range(3):
            unwanted = [
                await client.post("/submit", json={**EXAMPLE_FORM, "template_id": "unwanted"})
                for _ in range(20)
            ]
            assert {answer.status_code for answer in unwanted} == {202}
            step = {
                "id": "tell",
                "type": "auto_action",
                "actions": [
                    {
                        "type": "send_email",
                        "config": {"to": f"round{round_}@example.com", "subject": "s", "body": "b"},
                    }
                ],
            }
            created = await client.post(
                "/workflows",
                json={
                    "name": f"round {round_}",
                    "definition": {
                        "trigger": {
                            "type": "form_submitted",
                            "conditions": {
                                "path": "template_id",
                                "op": "==",
                                "value": f"r{round_}",
                            },
                        },
                        "initial_step_id": "tell",
                        "steps": [step],
                    },
                },
            )
            assert created.status_code == 201
            form = {**EXAMPLE_FORM, "template_id": f"r{round_}"}
            assert (await client.post("/submit", json=form)).status_code == 202
            try:
                await eventually(
                    lambda r=round_: smtp.to(f"round{r}@example.com"),
                    what=f"round {round_}'s email",
                    timeout=20,
                )
            except AssertionError:
                print(stack.logs())
                raise
    assert len(smtp.received) == 3, stack.logs()
