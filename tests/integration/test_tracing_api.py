"""The API's half of a trace, in this process against the real PostgreSQL and Redis: a traced
submission's request and intake spans, the intake's `traceparent` in the outbox row and in the
stream entry; untraced (the default), neither carries one."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.examples import EXAMPLE_FORM
from tests.support.inprocess import in_process_api
from tests.support.waiting import eventually
from workflow_core import tracing
from workflow_core.adapters.streams import StreamKeys
from workflow_core.persistence.pool import Pool
from workflow_core.settings import Settings

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


async def _published(
    redis: aioredis.Redis, keys: StreamKeys, submission_id: str
) -> dict[str, Any] | None:
    for _, fields in await redis.xrange(keys.stream):
        if submission_id in fields["payload"]:
            return dict(fields)
    return None


def _named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [found] = [span for span in exporter.get_finished_spans() if span.name == name]
    return found


async def test_a_traced_submission_carries_its_intake_span_to_the_outbox_and_the_stream(
    settings: Settings, pool: Pool, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    exporter = InMemorySpanExporter()
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with tracing.enabled_for_tests(exporter, service_name="flowline-api"):
        async with in_process_api(settings) as api:
            answer = await api.client.post(
                "/submit", json=EXAMPLE_FORM, headers={"traceparent": caller}
            )
            assert answer.status_code == 202, answer.text
            submission_id = answer.json()["submission_id"]
            entry = await eventually(
                lambda: _published(redis, keys, submission_id), what="the stream entry"
            )

    request, intake = _named(exporter, "POST /submit"), _named(exporter, "intake")
    assert request.context is not None and intake.context is not None
    # The request continues the caller's trace; the intake is its child.
    assert format(request.context.trace_id, "032x") == CALLER_TRACE
    assert request.parent is not None and format(request.parent.span_id, "016x") == CALLER_SPAN
    assert request.attributes is not None and request.attributes["http.route"] == "/submit"
    assert intake.parent is not None and intake.parent.span_id == request.context.span_id
    assert intake.attributes is not None
    assert intake.attributes["flowline.submission_id"] == submission_id

    carried = f"00-{CALLER_TRACE}-{format(intake.context.span_id, '016x')}-01"
    stored = await pool.fetchval(
        "SELECT payload FROM outbox WHERE submission_id = $1::uuid", submission_id
    )
    assert stored["traceparent"] == carried
    assert entry["traceparent"] == carried
    assert f'"traceparent":"{carried}"' in entry["payload"]


async def test_untraced_a_submission_carries_no_trace_context(
    settings: Settings, pool: Pool, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    assert tracing.ENABLED is False
    async with in_process_api(settings) as api:
        answer = await api.client.post(
            "/submit",
            json=EXAMPLE_FORM,
            headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        assert answer.status_code == 202, answer.text
        submission_id = answer.json()["submission_id"]
        entry = await eventually(
            lambda: _published(redis, keys, submission_id), what="the stream entry"
        )
    stored = await pool.fetchval(
        "SELECT payload FROM outbox WHERE submission_id = $1::uuid", submission_id
    )
    assert "traceparent" not in stored
    assert "traceparent" not in entry and "traceparent" not in entry["payload"]
