"""What a consumer does with one stream entry: decode it and hand it to the run driver. Every
log line of that work carries the event's ids (structlog context variables), and with
OTEL_ENABLED the work is a span that continues the submission's trace."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from services.worker.runner import RunDriver
from workflow_core import events, tracing
from workflow_core.adapters.streams import Entry
from workflow_core.log import bound


class EventHandler:
    def __init__(self, driver: RunDriver) -> None:
        self._driver = driver

    async def handle(self, entry: Entry) -> None:
        """Process the entry; returns once its effects are recorded (then it may be acked).
        Raises `events.MalformedEvent` for an entry that can never be processed."""
        event = events.from_fields(entry.fields)
        ids = {"event_id": str(event.event_id), "entry_id": entry.id}
        for name in ("submission_id", "run_id"):
            if isinstance(value := event.payload.get(name), str):
                ids[name] = value
        with bound(**ids), _span(event, entry):
            if event.type in events.STARTING:
                await self._driver.start_runs(event, entry.deliveries)
            else:
                await self._driver.resume(event, entry.deliveries)


def _span(event: events.Event, entry: Entry) -> AbstractContextManager[tracing.Span | None]:
    """The event's span, continuing the trace of the request that submitted it (OTEL_ENABLED;
    an event without a trace context starts a trace of its own)."""
    if not tracing.ENABLED:
        return nullcontext()
    payload = event.payload
    traceparent = payload.get(events.TRACEPARENT)
    return tracing.span(
        f"handle {event.type}",
        {
            "messaging.system": "redis",
            "messaging.message.id": entry.id,
            "flowline.event_id": event.event_id,
            "flowline.submission_id": payload.get("submission_id"),
            "flowline.run_id": payload.get("run_id"),
            "flowline.deliveries": entry.deliveries,
        },
        kind=tracing.SpanKind.CONSUMER,
        parent=traceparent if isinstance(traceparent, str) else None,
    )
