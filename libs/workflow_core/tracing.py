"""Optional OpenTelemetry traces (`OTEL_ENABLED`, off by default) that follow a submission from
the API through the stream to every action.

Off, nothing is set up: no SDK, no exporter thread, and every helper here returns at once
after reading one boolean (`ENABLED`), so the hot paths pay a function call at most. On, the
SDK is configured from its standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`...) and spans go to an OTLP/HTTP
collector in batches, from a thread of the SDK's.

The trace crosses the stream inside the event: the API stores the W3C `traceparent` of the
submission's span in the event's payload (so the outbox row and the stream entry carry it),
and the worker continues the trace from it (`span(..., parent=traceparent)`).

The provider is Flowline's own, not the process-wide one of `opentelemetry.trace`: it can be
set up and shut down again (the tests do), and a library's instrumentation does not start
exporting behind our back.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import structlog
from dotenv import dotenv_values
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from structlog.types import EventDict, WrappedLogger

__all__ = ["ENABLED", "Span", "SpanKind", "Status", "StatusCode"]

ENABLED = False
"""The one switch every hot path reads: False, and no span is made, nothing is propagated."""

SHUTDOWN_SECONDS = 3.0
"""The longest a stopping process waits for its last spans to be exported."""

TRACEPARENT = "traceparent"
"""The W3C header (and the event payload's key, and the stream entry's field) of a trace."""

_PROPAGATOR = TraceContextTextMapPropagator()
_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()
_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()

Attributes = Mapping[str, Any]


def configure(
    enabled: bool,
    service_name: str,
    *,
    exporter: SpanExporter | None = None,
    batch: bool = True,
    env_file: str | None = ".env",
) -> None:
    """Set up tracing for this process when `enabled`; otherwise leave everything off.
    `service_name` is the default of OTEL_SERVICE_NAME. `exporter` (tests): where spans go
    instead of OTLP/HTTP; `batch=False` exports each span as it ends. The OTEL_* lines of
    `env_file` count too, as Flowline's own settings do."""
    global ENABLED, _provider, _tracer
    if not enabled:
        return
    if env_file is not None:
        _sdk_variables_from(env_file)
    # Flowline imports the SDK here only: with tracing off, nothing of it is set up.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    # The sampler: OTEL_TRACES_SAMPLER(_ARG). Shut down by `shutdown`, bounded, not at exit.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    exporter = exporter or OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, ...
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("flowline")
    ENABLED = True
    structlog.get_logger(__name__).info(
        "tracing_on",
        service=resource.attributes.get(SERVICE_NAME),
        exporter=type(exporter).__name__,
    )


def _sdk_variables_from(env_file: str) -> None:
    """The SDK reads its variables from the process's environment only: the OTEL_* lines of
    the .env file join it, the environment winning (as it does for Flowline's settings)."""
    for name, value in dotenv_values(env_file).items():
        if name.upper().startswith("OTEL_") and value is not None:
            os.environ.setdefault(name.upper(), value)


def shutdown(timeout: float = SHUTDOWN_SECONDS) -> None:
    """Export what is left and stop the exporter (at the process's end), waiting `timeout`
    seconds at most: a collector that is away must not hold a stopping process (the SDK
    would retry for its whole export timeout). Tracing is off afterwards."""
    global ENABLED, _provider, _tracer
    ENABLED = False
    provider, _provider, _tracer = _provider, None, trace.NoOpTracer()
    if provider is None:
        return
    flushing = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    flushing.start()
    flushing.join(timeout)
    if flushing.is_alive():
        structlog.get_logger(__name__).warning(
            "tracing_spans_not_exported",
            reason=f"the collector took more than {timeout:g} s; the last spans are dropped",
        )


def span(
    name: str,
    attributes: Attributes | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
) -> AbstractContextManager[Span | None]:
    """A span around the block, the current one inside it (None when tracing is off). An
    exception leaving the block is recorded on it and makes its status an error. `parent`: a
    `traceparent` to continue (a trace that crossed the stream); else the current span's."""
    if not ENABLED:
        return _NOTHING
    context = _PROPAGATOR.extract({TRACEPARENT: parent}) if parent else None
    return _tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=_clean(attributes)
    )


def traceparent() -> str | None:
    """The W3C `traceparent` of the current span, to carry across the stream; None when
    tracing is off or no span is recording."""
    if not ENABLED:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def carried() -> dict[str, str]:
    """`{"traceparent": ...}` of the current span for an event's payload to carry (a timer's
    wake-up, a task's completion), so the run it wakes continues this trace; `{}` when
    tracing is off."""
    if not ENABLED:
        return {}
    found = traceparent()
    return {TRACEPARENT: found} if found else {}


def annotate(attributes: Attributes) -> None:
    """Set attributes on the current span (learnt after it began: an outcome, an id)."""
    if ENABLED:
        trace.get_current_span().set_attributes(_clean(attributes) or {})


def fail(reason: str) -> None:
    """Mark the current span as failed with `reason` (an error that was handled, not
    raised: a failed action, a run failed with its reason)."""
    if ENABLED:
        trace.get_current_span().set_status(Status(StatusCode.ERROR, reason[:500]))


def record_error(error: BaseException) -> None:
    """Record a caught exception on the current span and mark the span failed."""
    if ENABLED:
        current = trace.get_current_span()
        current.record_exception(error)
        current.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))


def add_trace_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: a line logged inside a span carries its `trace_id` (and
    `span_id`), so logs and traces can be joined."""
    if ENABLED:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
            event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def _clean(attributes: Attributes | None) -> dict[str, Any] | None:
    """OpenTelemetry takes str, bool, int and float values: ids become text, None is left
    out."""
    if not attributes:
        return None
    return {
        key: value if isinstance(value, str | bool | int | float) else str(value)
        for key, value in attributes.items()
        if value is not None
    }


@contextlib.contextmanager
def enabled_for_tests(
    exporter: SpanExporter, service_name: str = "flowline-test"
) -> Iterator[None]:
    """Tracing on, each span handed to `exporter` as it ends, for the block's duration."""
    configure(True, service_name, exporter=exporter, batch=False, env_file=None)
    try:
        yield
    finally:
        shutdown()
