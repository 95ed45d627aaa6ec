"""Traces (workflow_core/tracing.py): off by default and then nothing at all; on, the W3C
trace context goes into an event, survives the stream's encoding, and the worker's span
continues the request's trace."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from workflow_core import events, tracing
from workflow_core.persistence.journal import Journal
from workflow_core.settings import load_settings


def _event(traceparent: str | None) -> events.Event:
    return events.form_submitted(
        uuid4(), uuid4(), "contact", "acme", {"name": "Ada"}, datetime.now(UTC), traceparent
    )


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    with tracing.enabled_for_tests(exporter):
        yield exporter
    assert tracing.ENABLED is False


def _named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [found] = [span for span in exporter.get_finished_spans() if span.name == name]
    return found


# -- off ---------------------------------------------------------------------------------------


def test_tracing_is_off_by_default() -> None:
    assert load_settings(_env_file=None).otel_enabled is False
    assert tracing.ENABLED is False


def test_off_every_helper_is_a_no_op() -> None:
    tracing.configure(False, "flowline-test")
    assert tracing.ENABLED is False
    with tracing.span("request", {"a": 1}) as span:
        assert span is None
        assert tracing.traceparent() is None
        tracing.annotate({"flowline.outcome": "done"})
        tracing.fail("nothing")
        tracing.record_error(ValueError("nothing"))
        assert tracing.add_trace_id(None, "info", {"event": "x"}) == {"event": "x"}
    # The same shared null context every time: nothing is made per call.
    assert tracing.span("a") is tracing.span("b", parent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")


def test_off_an_event_carries_no_trace_context() -> None:
    event = _event(None)
    assert events.TRACEPARENT not in event.payload
    assert set(event.to_fields()) == {"type", "event_id", "payload"}


def test_off_no_sdk_is_loaded_and_no_exporter_thread_runs() -> None:
    """In a fresh interpreter, as the API's and the worker's main() do it. (The SDK's modules
    may be imported: redis-py's observability imports them when installed, and sets nothing
    up either.)"""
    script = (
        "import sys, threading\n"
        "import services.api.app, services.worker.__main__\n"
        "from workflow_core import tracing\n"
        "tracing.configure(False, 'flowline-api')\n"
        "assert tracing.ENABLED is False and tracing._provider is None\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry.exporter')], 'exp'\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "tracing.shutdown()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


# -- on ----------------------------------------------------------------------------------------


def test_the_trace_context_crosses_the_stream_in_the_event(spans: InMemorySpanExporter) -> None:
    with tracing.span("POST /submit", kind=tracing.SpanKind.SERVER):
        traceparent = tracing.traceparent()
    assert traceparent is not None and traceparent.startswith("00-")
    fields = _event(traceparent).to_fields()
    assert fields[events.TRACEPARENT] == traceparent  # readable on the entry itself

    received = events.from_fields(fields)
    parent = received.payload[events.TRACEPARENT]
    with tracing.span("handle form_submitted", parent=parent), tracing.span("run"):
        pass

    request, handled, run = (
        _named(spans, name) for name in ("POST /submit", "handle form_submitted", "run")
    )
    assert request.context is not None and handled.context is not None
    assert handled.context.trace_id == request.context.trace_id
    assert handled.parent is not None and handled.parent.span_id == request.context.span_id
    assert run.parent is not None and run.parent.span_id == handled.context.span_id


def test_a_broken_trace_context_starts_a_trace_of_its_own(spans: InMemorySpanExporter) -> None:
    with tracing.span("handle", parent="00-not-a-trace-context"):
        pass
    handled = _named(spans, "handle")
    assert handled.parent is None and handled.context is not None
    assert handled.context.trace_id != 0


def test_errors_and_outcomes_are_on_the_spans(spans: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), tracing.span("raised"):
        raise RuntimeError("boom")
    with tracing.span("handled", {"flowline.run_id": uuid4(), "ignored": None}):
        tracing.record_error(ValueError("bad address"))
        tracing.annotate({"flowline.outcome": "failed"})
    raised, handled = _named(spans, "raised"), _named(spans, "handled")
    assert raised.status.status_code is StatusCode.ERROR
    assert [event.name for event in raised.events] == ["exception"]
    assert handled.status.status_code is StatusCode.ERROR
    assert handled.status.description == "ValueError: bad address"
    assert handled.attributes is not None
    assert handled.attributes["flowline.outcome"] == "failed"
    assert isinstance(handled.attributes["flowline.run_id"], str)
    assert "ignored" not in handled.attributes


def test_a_log_line_inside_a_span_carries_its_trace_id(spans: InMemorySpanExporter) -> None:
    assert tracing.add_trace_id(None, "info", {"event": "outside"}) == {"event": "outside"}
    with tracing.span("work"):
        line = tracing.add_trace_id(None, "info", {"event": "inside"})
    work = _named(spans, "work")
    assert work.context is not None
    assert line["trace_id"] == format(work.context.trace_id, "032x")
    assert line["span_id"] == format(work.context.span_id, "016x")


def test_the_service_name_is_the_process_default_unless_the_environment_names_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def service_name() -> object:
        exporter = InMemorySpanExporter()
        with tracing.enabled_for_tests(exporter, service_name="flowline-worker"), tracing.span("x"):
            pass
        [span] = exporter.get_finished_spans()
        return span.resource.attributes["service.name"]

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert service_name() == "flowline-worker"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "forms-eu")
    assert service_name() == "forms-eu"


def test_the_sdk_variables_of_the_env_file_count_the_environment_winning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "OTEL_SERVICE_NAME=from-the-file\nOTEL_TRACES_SAMPLER=always_off\nLOG_LEVEL=DEBUG\n"
    )
    for name in (
        "OTEL_SERVICE_NAME",
        "OTEL_TRACES_SAMPLER",
        "OTEL_RESOURCE_ATTRIBUTES",
        "LOG_LEVEL",
    ):
        monkeypatch.setenv(name, "")  # so that it is restored after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    exporter = InMemorySpanExporter()
    tracing.configure(True, "flowline-api", exporter=exporter, batch=False, env_file=str(env_file))
    try:
        with tracing.span("x"):
            pass
    finally:
        tracing.shutdown()
    [span] = exporter.get_finished_spans()  # always_on: the environment's sampler won
    assert span.resource.attributes["service.name"] == "from-the-file"
    assert "LOG_LEVEL" not in os.environ  # only the SDK's variables are taken from the file


def test_a_timer_carries_the_trace_on_to_the_run_it_wakes(spans: InMemorySpanExporter) -> None:
    run_id = uuid4()
    journal = Journal()
    with tracing.span("action send_email"):
        journal.timer(run_id, "retry", {"attempt": 2}, after=1.0)
    [timer] = journal.timers
    assert timer["payload"]["attempt"] == 2
    woken = events.run_resume(uuid4(), run_id, "retry", **timer["payload"])
    with tracing.span("handle run.resume", parent=woken.payload[events.TRACEPARENT]):
        pass
    action, handled = _named(spans, "action send_email"), _named(spans, "handle run.resume")
    assert action.context is not None and handled.parent is not None
    assert handled.parent.span_id == action.context.span_id


def test_off_a_timer_carries_no_trace() -> None:
    journal = Journal()
    journal.timer(uuid4(), "retry", {"attempt": 2}, after=1.0)
    assert journal.timers[0]["payload"] == {"attempt": 2}
    assert tracing.carried() == {}
