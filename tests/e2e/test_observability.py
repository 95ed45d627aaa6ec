"""What an operator sees, with the API and a worker running as processes: every series of
CONTRACT section 10 on their /metrics pages with the values the work done implies, an SMTP
server refusing connections in the worker's metrics and log, and every log line JSON with the
ids of its work on it."""

from __future__ import annotations

import re
import signal
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Stack
from tests.support.examples import EXAMPLE_FORM, example_workflow
from tests.support.http_receiver import http_receiver
from tests.support.net import free_port
from tests.support.scrape import Scrape, scrape_when_up
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

FAILING_WORKFLOW: dict[str, Any] = {
    "name": "Email an address that is none",
    "definition": {
        "trigger": {
            "type": "form_submitted",
            "conditions": {"path": "template_id", "op": "==", "value": "broken"},
        },
        "initial_step_id": "mail",
        "steps": [
            {
                "id": "mail",
                "type": "auto_action",
                "actions": [
                    {
                        "type": "send_email",
                        "config": {"to": "not an address", "subject": "x", "body": "x"},
                    }
                ],
            }
        ],
    },
}


async def _run_status(client: httpx.AsyncClient, submission_id: str, status: str) -> bool:
    runs = (await client.get(f"/submissions/{submission_id}")).json()["runs"]
    return bool(runs) and all(run["status"] == status for run in runs)


async def _submit(client: httpx.AsyncClient, form: dict[str, Any]) -> str:
    answer = await client.post("/submit", json=form)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["submission_id"])


async def test_api_and_worker_export_every_series_of_the_contract(
    stack: Stack, smtp: SmtpServer
) -> None:
    stack.start_api(METRICS_SAMPLE_SECONDS=1)
    worker_port = free_port()
    worker_metrics = f"http://127.0.0.1:{worker_port}/metrics"
    stack.start_worker(METRICS_SAMPLE_SECONDS=1, WORKER_METRICS_PORT=worker_port)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        for workflow in (example_workflow(), FAILING_WORKFLOW):
            assert (await client.post("/workflows", json=workflow)).status_code == 201
        sent = await _submit(client, EXAMPLE_FORM)
        broken = await _submit(client, {**EXAMPLE_FORM, "template_id": "broken"})
        await eventually(lambda: _run_status(client, sent, "completed"), what="the email's run")
        await eventually(lambda: _run_status(client, broken, "failed"), what="the failed run")
        assert (await client.get("/runs/not-a-uuid")).status_code == 422

    async def sampled(url: str) -> Scrape | None:
        page = await scrape_when_up(url)
        if page is None:
            return None
        done = page.value("flowline_runs", status="completed") == 1
        return page if done and page.value("flowline_runs", status="failed") == 1 else None

    api = await eventually(lambda: sampled(f"{stack.base_url}/metrics"), what="API samples")
    worker = await eventually(lambda: sampled(worker_metrics), what="worker samples")

    for page in (api, worker):
        assert all(name.startswith("flowline_") for name in page.names), page.names
        assert not any(UUID_TEXT.search(value) for value in page.label_values())
        assert page.value("flowline_outbox_unpublished") == 0
        assert page.value("flowline_stream_length") == 2
        assert page.value("flowline_stream_lag", group="flowline") == 0
        assert page.value("flowline_stream_pending", group="flowline") == 0
        assert page.value("flowline_dead_letters") == 0
        assert page.value("flowline_runs", status="running") == 0
        assert page.value("flowline_dependency_up", dependency="postgresql") == 1
        assert page.value("flowline_dependency_up", dependency="redis") == 1

    assert api.value("flowline_submissions_accepted_total") == 2
    submit = {"method": "POST", "route": "/submit", "status": "202"}
    assert api.value("flowline_http_requests_total", **submit) == 2
    assert api.value("flowline_http_request_duration_seconds_count", **submit) == 2
    assert api.value("flowline_http_request_duration_seconds_bucket", le="+Inf", **submit) == 2
    # The template, never the path; a request that matched no route is `unmatched`.
    assert api.value("flowline_http_requests_total", route="/runs/{run_id}", status="422") == 1
    assert api.value("flowline_http_requests_total", route="/submissions/{submission_id}")

    email = {"type": "send_email"}
    assert worker.value("flowline_action_attempts_total", outcome="succeeded", **email) == 1
    assert worker.value("flowline_action_attempts_total", outcome="failed", **email) == 1
    duration = worker.value("flowline_action_duration_seconds_sum", outcome="succeeded", **email)
    assert duration is not None and 0 < duration < 10
    assert worker.value("flowline_action_duration_seconds_count", **email) == 2
    assert worker.value("flowline_emails_total", outcome="sent") == 1
    assert worker.value("flowline_emails_total", outcome="refused") == 1
    assert worker.value("flowline_emails_total", outcome="deduplicated") == 0
    assert worker.value("flowline_emails_total", outcome="retried") == 0
    assert worker.value("flowline_dependency_up", dependency="smtp") == 1
    assert worker.value("flowline_smtp_connection_failures_total") == 0
    assert worker.value("flowline_events_handled_total", outcome="handled") == 2
    assert len(smtp.received) == 1


async def test_an_smtp_server_refusing_connections_shows_in_metrics_and_one_warning(
    stack: Stack,
) -> None:
    worker_port = free_port()
    stack.start_api()
    worker = stack.start_worker(
        SMTP_PORT=free_port(),  # nothing listens there: every connection is refused
        WORKER_METRICS_PORT=worker_port,
        LOG_LEVEL="INFO",
    )
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        assert (await client.post("/workflows", json=example_workflow())).status_code == 201
        await _submit(client, EXAMPLE_FORM)

    async def refused_often() -> Scrape | None:
        page = await scrape_when_up(f"http://127.0.0.1:{worker_port}/metrics")
        if page is None:
            return None
        failures = page.value("flowline_smtp_connection_failures_total") or 0
        return page if failures >= 3 else None

    page = await eventually(refused_often, what="three refused connections", timeout=30)
    assert page.value("flowline_dependency_up", dependency="smtp") == 0
    assert (page.value("flowline_emails_total", outcome="retried") or 0) >= 3
    warnings = [
        line for line in _json_lines(worker.log()) if line.get("event") == "smtp_unreachable"
    ]
    assert len(warnings) == 1, warnings  # at most one a minute, however many failures
    [warning] = warnings
    assert warning["level"] == "warning"
    assert "ConnectionRefusedError" in warning["error"] or "refused" in warning["error"].lower()
    assert warning["port"] == int(worker.env["SMTP_PORT"])


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.strip():
            try:
                parsed = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise AssertionError(f"a log line that is not JSON: {line!r}") from None
            assert isinstance(parsed, dict), line
            lines.append(parsed)
    return lines


async def test_every_log_line_is_json_with_the_ids_of_its_work(
    stack: Stack, smtp: SmtpServer
) -> None:
    json_info = {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    api = stack.start_api(**json_info)
    worker = stack.start_worker(**json_info)
    async with http_receiver() as receiver, httpx.AsyncClient(base_url=stack.base_url) as client:
        hook = example_workflow()
        hook["definition"]["steps"][0]["actions"].append(
            {"type": "webhook", "config": {"url": f"{receiver.url}/hook", "body": {"a": 1}}}
        )
        assert (await client.post("/workflows", json=hook)).status_code == 201
        submission_id = await _submit(client, EXAMPLE_FORM)
        await eventually(
            lambda: _run_status(client, submission_id, "completed"), what="the run", timeout=20
        )
        assert (await client.post("/submit", json={"template_id": 1})).status_code == 422
        assert receiver.received
    for service in (api, worker):
        service.signal(signal.SIGTERM)
        service.process.wait(timeout=20)

    api_lines, worker_lines = _json_lines(api.log()), _json_lines(worker.log())
    assert all("level" in line and "timestamp" in line for line in api_lines + worker_lines)
    # uvicorn's own lines, in JSON too
    assert any(line.get("logger", "").startswith("uvicorn") for line in api_lines), api_lines
    accepted = [line for line in api_lines if line.get("route") == "/submit"]
    assert {(line["status"], line.get("submission_id")) for line in accepted} == {
        (202, submission_id),
        (422, None),
    }
    assert all(line["event"] == "http_request" and line["method"] == "POST" for line in accepted)
    # httpx's line of the webhook call carries the ids of the run that made it
    [call] = [line for line in worker_lines if line.get("logger") == "httpx"]
    assert "/hook" in call["event"]
    assert call["submission_id"] == submission_id
    assert UUID_TEXT.fullmatch(call["run_id"]) and UUID_TEXT.fullmatch(call["event_id"])
    assert any(line.get("event") == "worker_stopped" for line in worker_lines)
