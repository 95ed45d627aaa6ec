"""Traces with OTEL_ENABLED=true, the API and a worker running as processes and exporting to
an OTLP/HTTP collector in this test (the recording receiver, taking POST /v1/traces; its
protobuf decoded with opentelemetry-proto): one submission of the original example is one
trace, from the API's request span through the stream to the email and the webhook, the
webhook's retry (on a timer, through a second event) included."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tests.conftest import Stack
from tests.support.examples import EXAMPLE_FORM, example_workflow
from tests.support.http_receiver import Answer, HttpReceiver, http_receiver
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Exported:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    failed: bool
    start: int


def _value(value: AnyValue) -> Any:
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


def _exported(collector: HttpReceiver) -> list[Exported]:
    """Every span the collector received, from every process."""
    found = []
    for request in collector.received:
        if request.method != "POST" or request.path != "/v1/traces":
            continue
        batch = ExportTraceServiceRequest.FromString(request.body)
        for resource_spans in batch.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                found += [_span(resource["service.name"], span) for span in scope_spans.spans]
    return found


def _span(service: str, span: ProtoSpan) -> Exported:
    return Exported(
        service=service,
        name=span.name,
        kind=span.kind,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        attributes={a.key: _value(a.value) for a in span.attributes},
        failed=span.status.code == Status.STATUS_CODE_ERROR,
        start=span.start_time_unix_nano,
    )


def _all(spans: list[Exported], name: str) -> list[Exported]:
    return [span for span in spans if span.name == name]


def _one(spans: list[Exported], name: str) -> Exported:
    named = _all(spans, name)
    assert len(named) == 1, (name, [span.name for span in spans])
    return named[0]


def _runs(spans: list[Exported]) -> tuple[Exported, Exported]:
    """The run's two stretches: the first, under the submission's event; the second, after
    the retry's timer woke it."""
    first, second = sorted(_all(spans, "run"), key=lambda span: span.start)
    return first, second


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_one_trace_follows_a_submission_from_the_request_to_every_action(
    stack: Stack, smtp: SmtpServer
) -> None:
    async with http_receiver() as collector, http_receiver() as hooks:
        traced = {
            "OTEL_ENABLED": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # milliseconds between exports
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "ACTION_RETRY_INITIAL_SECONDS": "0.2",
        }
        api, worker = stack.start_api(**traced), stack.start_worker(**traced)
        hooks.answer(Answer(status=503))  # the webhook's first attempt: retried on a timer
        workflow = example_workflow()
        workflow["definition"]["steps"][0]["actions"].append(
            {"type": "webhook", "config": {"url": f"{hooks.url}/hook", "body": {"a": 1}}}
        )
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
            created = await client.post("/workflows", json=workflow)
            assert created.status_code == 201, created.text
            answer = await client.post("/submit", json=EXAMPLE_FORM)
            assert answer.status_code == 202, answer.text
            submission_id = answer.json()["submission_id"]

            async def completed_run() -> dict[str, Any] | None:
                runs = (await client.get(f"/submissions/{submission_id}")).json()["runs"]
                return runs[0] if runs and runs[0]["status"] == "completed" else None

            run = await eventually(completed_run, what="the run", timeout=20)

        def all_exported() -> list[Exported] | None:
            spans = _exported(collector)
            names = {span.name for span in spans}
            # A parent ends (and is queued for export) after its children.
            wanted = {"POST /submit", "handle form_submitted", "handle run.resume"}
            return spans if wanted <= names else None

        spans = await eventually(all_exported, what="the spans of both processes", timeout=20)
        # Stopped while the collector still answers their last export (off the event loop).
        for service in (api, worker):
            service.signal(signal.SIGTERM)
        for service in (api, worker):
            assert await asyncio.to_thread(service.process.wait, 20) == 0, service.log()[-2000:]

    request = _one(spans, "POST /submit")
    assert request.service == "flowline-api"
    assert request.kind == ProtoSpan.SPAN_KIND_SERVER
    assert request.attributes["http.route"] == "/submit"
    assert request.attributes["http.response.status_code"] == 202
    intake = _one(spans, "intake")
    assert intake.parent_id == request.span_id
    assert intake.attributes["flowline.submission_id"] == submission_id

    # The worker's spans continue the request's trace, from the traceparent in the event.
    handled = _one(spans, "handle form_submitted")
    assert handled.service == "flowline-worker"
    assert handled.kind == ProtoSpan.SPAN_KIND_CONSUMER
    assert handled.parent_id == intake.span_id
    first_run, second_run = _runs(spans)
    assert first_run.parent_id == handled.span_id
    for run_span in (first_run, second_run):
        assert run_span.attributes["flowline.run_id"] == run["id"]
        assert run_span.attributes["flowline.workflow_id"] == created.json()["id"]
    assert first_run.attributes["flowline.outcome"] == "waiting"  # for the webhook's retry
    assert second_run.attributes["flowline.outcome"] == "completed"
    first_step, second_step = sorted(_all(spans, "step step1"), key=lambda s: s.start)
    assert first_step.parent_id == first_run.span_id
    assert first_step.attributes["flowline.step_id"] == "step1"
    assert first_step.attributes["flowline.outcome"] == "retry"
    assert second_step.parent_id == second_run.span_id
    email = _one(spans, "action send_email")
    assert email.parent_id == first_step.span_id
    assert email.attributes["flowline.action_type"] == "send_email"
    assert email.attributes["flowline.outcome"] == "succeeded"
    assert _one(spans, "smtp send").parent_id == email.span_id

    # The retry's timer carried the trace on: its event continues from the first step.
    resumed = _one(spans, "handle run.resume")
    assert resumed.parent_id == first_step.span_id and second_run.parent_id == resumed.span_id
    refused, accepted = sorted(_all(spans, "action webhook"), key=lambda s: s.start)
    assert (refused.parent_id, accepted.parent_id) == (first_step.span_id, second_step.span_id)
    assert refused.attributes["flowline.outcome"] == "retrying" and refused.failed
    assert accepted.attributes["flowline.outcome"] == "succeeded"
    assert accepted.attributes["flowline.attempt"] == 2
    calls = {call.parent_id: call for call in _all(spans, "POST")}
    assert calls[refused.span_id].failed
    assert calls[refused.span_id].attributes["http.response.status_code"] == 503
    assert calls[accepted.span_id].attributes["http.response.status_code"] == 200
    assert calls[accepted.span_id].kind == ProtoSpan.SPAN_KIND_CLIENT

    trace = [span for span in spans if span.trace_id == request.trace_id]
    assert len(trace) == 14, sorted(span.name for span in trace)
    assert {span.span_id for span in trace if span.failed} == {
        refused.span_id,
        calls[refused.span_id].span_id,
    }
    assert len(smtp.received) == 1

    # The receiver can go on with the trace; the log lines name it.
    assert len(hooks.received) == 2
    for hook in hooks.received:
        assert hook.headers["traceparent"].split("-")[1] == request.trace_id
    submit_line = next(line for line in _json_lines(api.log()) if line.get("route") == "/submit")
    assert submit_line["trace_id"] == request.trace_id
    worker_lines = _json_lines(worker.log())
    httpx_line = next(line for line in worker_lines if "/hook" in str(line.get("event")))
    assert httpx_line["trace_id"] == request.trace_id
    assert any(line.get("event") == "tracing_on" for line in worker_lines)


async def test_a_collector_that_never_answers_delays_no_form_and_no_stop(
    stack: Stack, smtp: SmtpServer
) -> None:
    """Traces on, and the collector a black hole (it takes connections and never answers, as a
    hung backend or a dropped route does): forms are still accepted and emailed, and both
    processes still stop on SIGTERM, each giving up on its last spans after a few seconds."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing, keep the connection open

    black_hole = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    try:
        traced = {
            "OTEL_ENABLED": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        api, worker = stack.start_api(**traced), stack.start_worker(**traced)
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
            assert (await client.post("/workflows", json=example_workflow())).status_code == 201
            for _ in range(5):
                assert (await client.post("/submit", json=EXAMPLE_FORM)).status_code == 202
        await eventually(lambda: len(smtp.received) >= 5, what="five emails", timeout=30)
        await eventually(lambda: held, what="an export to the collector", timeout=10)

        started = asyncio.get_running_loop().time()
        for service in (api, worker):
            service.signal(signal.SIGTERM)
        for service in (api, worker):
            assert await asyncio.to_thread(service.process.wait, 30) == 0, service.log()[-2000:]
        assert asyncio.get_running_loop().time() - started < 15
        assert len(smtp.received) == 5
    finally:
        for writer in held:
            writer.close()
        black_hole.close()
