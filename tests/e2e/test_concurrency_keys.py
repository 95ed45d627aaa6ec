"""Concurrency keys with real processes, through the HTTP API: three forms from one address to
a workflow with `"concurrency": {"key": "{data.email}", "limit": 1}` whose first step waits
2 s run one after another, in the order they came; another address runs at once; and a worker
killed while a run holds the slot does not leave the queue stuck: it drains after the restart."""

from __future__ import annotations

import itertools
import signal
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.support.examples import unique_email
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

QUICK = {
    "CLAIM_IDLE_SECONDS": 1,
    "CLAIM_INTERVAL_SECONDS": 0.3,
    "WORKER_HEARTBEAT_SECONDS": 0.5,
    "WORKER_DEAD_AFTER_SECONDS": 2,
    "EVENT_RECONCILE_SECONDS": 2,
}

ONE_AT_A_TIME = {
    "name": "One request per address at a time",
    "definition": {
        "trigger": {
            "type": "form_submitted",
            "conditions": {"path": "template_id", "op": "==", "value": "request"},
        },
        "concurrency": {"key": "{data.email}", "limit": 1},
        "initial_step_id": "pause",
        "steps": [
            {
                "id": "pause",
                "type": "wait",
                "config": {"for": "PT2S"},
                "transitions": [{"to": "reply"}],
            },
            {
                "id": "reply",
                "type": "auto_action",
                "actions": [
                    {
                        "type": "send_email",
                        "config": {
                            "to_path": "data.email",
                            "subject": "Request {data.n}",
                            "body": "done",
                        },
                    }
                ],
            },
        ],
    },
}


async def _run_of(client: httpx.AsyncClient, submission_id: str) -> dict[str, Any]:
    async def found() -> str | None:
        runs = (await client.get(f"/submissions/{submission_id}")).json().get("runs") or []
        return runs[0]["id"] if runs else None

    run_id = await eventually(found, what=f"the run of submission {submission_id}")
    run: dict[str, Any] = (await client.get(f"/runs/{run_id}")).json()
    return run


def _times(run: dict[str, Any]) -> tuple[datetime, datetime]:
    """When the run's first step was entered, and when the run finished."""
    entered = datetime.fromisoformat(run["steps"][0]["entered_at"])
    return entered, datetime.fromisoformat(run["finished_at"])


async def test_runs_with_one_key_take_turns_in_order_and_survive_a_killed_worker(
    stack: Stack, smtp: SmtpServer
) -> None:
    stack.start_api()
    worker = stack.start_worker("worker-a", **QUICK)
    same, other = unique_email(), unique_email()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        created = await client.post("/workflows", json=ONE_AT_A_TIME)
        assert created.status_code == 201, created.text
        submitted = []
        for n in (1, 2, 3):
            form = {"template_id": "request", "org_id": "org_c", "data": {"email": same, "n": n}}
            answer = await client.post("/submit", json=form)
            assert answer.status_code == 202, answer.text
            submitted.append(answer.json()["submission_id"])
        form = {"template_id": "request", "org_id": "org_c", "data": {"email": other, "n": 9}}
        other_submission = (await client.post("/submit", json=form)).json()["submission_id"]

        async def in_its_wait(submission_id: str) -> bool:
            run = await _run_of(client, submission_id)
            return run["status"] == "waiting" and run["waiting_for"] is None

        await eventually(lambda: in_its_wait(submitted[0]), what="the first run in its wait")
        for queued in submitted[1:]:
            run = await _run_of(client, queued)
            assert (run["status"], run["waiting_for"], run["steps"]) == (
                "waiting",
                "concurrency",
                [],
            )
        await eventually(lambda: in_its_wait(other_submission), what="another key at once")

        await eventually(
            lambda: in_its_wait(submitted[1]), timeout=20, what="the second run in its wait"
        )
        worker.signal(signal.SIGKILL)
        worker.process.wait(timeout=10)
        stack.start_worker("worker-b", **QUICK)

        async def finished(submission_id: str) -> dict[str, Any] | None:
            run = await _run_of(client, submission_id)
            return run if run["status"] == "completed" else None

        runs = [
            await eventually(
                lambda s=s: finished(s),  # type: ignore[misc]
                timeout=40,
                what=f"run {n} completed ({stack.logs()[-2000:]})",
            )
            for n, s in enumerate(submitted, 1)
        ]
        other_run = await finished(other_submission)
    assert other_run is not None
    spans = [_times(run) for run in runs]
    for (_, earlier_end), (later_start, _) in itertools.pairwise(spans):
        assert later_start >= earlier_end, spans  # one after another, in order
    other_start, _ = _times(other_run)
    assert other_start < spans[0][1]  # another key does not wait for the first
    subjects = [r.message["Subject"] for r in smtp.received if r.rcpt_tos == [same]]
    assert subjects == ["Request 1", "Request 2", "Request 3"]
    assert [r.rcpt_tos for r in smtp.received].count([other]) == 1
