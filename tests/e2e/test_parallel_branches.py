"""Parallel branches end to end: the API and the worker as processes, emails through a real
SMTP server. The README's example as written (two branches, then the join's email); a branch
failing on a refused webhook (the run fails with the reason, no final email, the other
branch's task cancelled); `any` going on past a branch that waits for a person."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.support.examples import unique_email
from tests.support.parallel_flows import (
    email_step,
    parallel_definition,
    review_step,
    webhook_step,
)
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_bodies() -> list[dict[str, Any]]:
    """The JSON bodies of the curl commands of the README's "Parallel branches" section."""
    section = README.read_text().split("### Parallel branches", 1)[1].split("\n### ", 1)[0]
    return [json.loads(body) for body in re.findall(r"-d '(\{.*?\n\})'", section, re.S)]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def finished_run(client: httpx.AsyncClient, submission_id: str) -> dict[str, Any] | None:
    runs = (await client.get(f"/submissions/{submission_id}")).json()["runs"]
    if not runs or runs[0]["status"] not in {"completed", "failed"}:
        return None
    run: dict[str, Any] = (await client.get(f"/runs/{runs[0]['id']}")).json()
    return run


async def run_of(client: httpx.AsyncClient, workflow: dict[str, Any], form: dict[str, Any]) -> Any:
    created = await client.post("/workflows", json=workflow)
    assert created.status_code == 201, created.text
    submitted = await client.post("/submit", json=form)
    assert submitted.status_code == 202, submitted.text
    return await eventually(
        lambda: finished_run(client, submitted.json()["submission_id"]), what="the run to end"
    )


async def test_parallel_branches_join_fail_and_cancel(stack: Stack, smtp: SmtpServer) -> None:
    stack.start_api()
    stack.start_worker()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        # A branch that jumps out of itself is refused with the path of the transition.
        leaking = parallel_definition({"a": [email_step("a1", "a1", transitions=[{"to": "done"}])]})
        refused = await client.post("/workflows", json={"name": "leak", "definition": leaking})
        assert refused.status_code == 422
        paths = [error["path"] for error in refused.json()["detail"]]
        assert "steps[0].branches[0].steps[0].transitions[0].to" in paths, refused.json()

        # The README's example, as written: both branches email, then the welcome.
        workflow, form = readme_bodies()
        run = await run_of(client, workflow, form)
        assert run["status"] == "completed", run
        welcome = await eventually(lambda: smtp.to("ops@acme.example"), what="the welcome")
        checks = [
            smtp.to(address)
            for address in ("legal@example.com", "finance@example.com", "accounting@example.com")
        ]
        assert [len(mails) for mails in checks] == [1, 1, 1]
        assert welcome[0].message["Subject"] == "Welcome, Acme"
        assert all(mails[0].at <= welcome[0].at for mails in checks)
        branches = run["context"]["steps"]["checks"]["branches"]
        assert branches["finance"] == {"status": "completed", "step": "tell_accounting", "seq": 4}

        # A branch failing on a refused webhook: the run fails, no final email, and the other
        # branch's task is cancelled (completing it is refused).
        email = unique_email()
        failing = parallel_definition(
            {
                "approve": [review_step("approve")],
                "notify": [webhook_step("call", f"http://127.0.0.1:{closed_port()}/hook")],
            },
            template_id="parallel_fails",
        )
        run = await run_of(
            client,
            {"name": "fails", "definition": failing},
            {"template_id": "parallel_fails", "org_id": "org_1", "data": {"email": email}},
        )
        assert run["status"] == "failed"
        assert "parallel step 'checks', branch 'notify'" in run["error"]
        assert "call.actions[0] (webhook) failed" in run["error"]
        [task] = (await client.get("/tasks", params={"run_id": run["id"]})).json()
        assert task["status"] == "cancelled"
        refused = await client.post(f"/tasks/{task['id']}/complete", json={"outcome": "ok"})
        assert refused.status_code == 409
        assert smtp.to(email) == []

        # `any`: the branch that emails wins; the one waiting for a person is cancelled.
        email = unique_email()
        racing = parallel_definition(
            {"person": [review_step("sign")], "robot": [email_step("auto", "auto")]},
            join="any",
            template_id="parallel_any",
        )
        run = await run_of(
            client,
            {"name": "any", "definition": racing},
            {"template_id": "parallel_any", "org_id": "org_1", "data": {"email": email}},
        )
        assert run["status"] == "completed"
        [task] = (await client.get("/tasks", params={"run_id": run["id"]})).json()
        assert task["status"] == "cancelled"
        mails = await eventually(lambda: len(smtp.to(email)) == 2 and smtp.to(email))
        assert [mail.message["Subject"] for mail in mails] == ["auto", "All checks done"]
