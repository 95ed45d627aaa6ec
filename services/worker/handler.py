"""What a consumer does with one stream entry: decode it and hand it to the run driver. Every
log line of that work carries the event's ids (structlog context variables)."""

from __future__ import annotations

from services.worker.runner import RunDriver
from workflow_core import events
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
        with bound(**ids):
            if event.type in events.STARTING:
                await self._driver.start_runs(event, entry.deliveries)
            else:
                await self._driver.resume(event, entry.deliveries)
