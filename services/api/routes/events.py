"""Events of any type (`order.paid`, `email.confirmed`): stored with their outbox row like a
submission; they start the workflows whose trigger has their type and resume the runs waiting
for them. Only an `admin` key may post one: a `submit` key is safe in a web page, and an event
from a browser could resume anyone's waiting runs."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from structlog.contextvars import bind_contextvars

from services.api.access import caller, needs, organisation_of
from services.api.deps import Database, IdempotencyKey
from services.api.routes.submissions import replayable_202
from services.api.schemas.submissions import EventAccepted, EventPost
from workflow_core import events, metrics, tracing
from workflow_core.adapters.ratelimit import SubmitRate
from workflow_core.errors import Unprocessable
from workflow_core.ids import new_id
from workflow_core.persistence.posted_events import StoredEvent

router = APIRouter(tags=["events"])


@router.post(
    "/events",
    status_code=202,
    response_model=EventAccepted,
    responses={
        202: {
            "headers": {
                "Idempotent-Replayed": {
                    "description": "`true` when an event with the same `id` (or "
                    "Idempotency-Key) was posted before: nothing new was stored",
                    "schema": {"type": "string"},
                }
            }
        },
        429: {
            "description": "the organisation sends more than SUBMIT_RATE_PER_ORG submissions "
            "and events per second (bursts of twice that); nothing was stored",
            "headers": {
                "Retry-After": {
                    "description": "seconds until an event would be accepted",
                    "schema": {"type": "integer"},
                }
            },
        },
    },
)
async def post_event(
    body: EventPost, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    """Store the event and queue it, together: a crash (or Redis being away) cannot lose it.
    Needs the `admin` scope. The same `id` (or Idempotency-Key) again gets the first answer."""
    principal = caller(request)
    needs(principal, "admin")
    org_id = organisation_of(principal, body.org_id)
    if body.id is not None and idempotency_key is not None and body.id != idempotency_key:
        raise Unprocessable("id", "the body's id and the Idempotency-Key header differ")
    submit_rate: SubmitRate = request.app.state.submit_rate
    await submit_rate.check(org_id)
    received_at = datetime.now(UTC)
    event = events.posted(
        new_id(), body.type, org_id, body.data, received_at, tracing.traceparent()
    )
    db: Database = request.app.state.database
    stored = await db.store_event(event, body.id or idempotency_key, received_at)
    return _accepted(stored)


def _accepted(stored: StoredEvent) -> Response:
    bind_contextvars(event_id=str(stored.event_id))
    if not stored.replayed:
        metrics.EVENTS_ACCEPTED.inc()
    return replayable_202({"event_id": stored.event_id, "status": "accepted"}, stored.replayed)
