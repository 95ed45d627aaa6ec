"""Form submissions: accepted in one transaction with their event, read back with their runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Request, Response
from structlog.contextvars import bind_contextvars

from services.api.access import (
    Caller,
    caller,
    from_allowed_origin,
    must_see,
    needs,
    organisation_of,
)
from services.api.deps import Database, Db, IdempotencyKey
from services.api.presenters import run_summary
from services.api.schemas.submissions import SubmissionOut, SubmitAccepted, SubmitRequest
from workflow_core import metrics
from workflow_core.adapters.ratelimit import SubmitRate
from workflow_core.errors import NotFound
from workflow_core.persistence import runs, submissions
from workflow_core.persistence.submissions import Accepted, NewSubmission

router = APIRouter(tags=["submissions"])
_ACCEPTED = metrics.SUBMISSIONS_ACCEPTED


@router.post(
    "/submit",
    status_code=202,
    response_model=SubmitAccepted,
    responses={
        202: {
            "headers": {
                "Idempotent-Replayed": {
                    "description": "`true` when this is the first answer to the same "
                    "Idempotency-Key again (nothing new was stored)",
                    "schema": {"type": "string"},
                }
            }
        },
        429: {
            "description": "the organisation sends more than SUBMIT_RATE_PER_ORG submissions "
            "per second (bursts of twice that); nothing was stored",
            "headers": {
                "Retry-After": {
                    "description": "seconds until a submission would be accepted",
                    "schema": {"type": "integer"},
                }
            },
        },
    },
)
async def submit(
    body: SubmitRequest, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    """Store the submission and its event together; the relay publishes the event, so a crash
    (or Redis being away) cannot lose it. An organisation over SUBMIT_RATE_PER_ORG gets 429."""
    # The hottest route reads the database from the app state rather than through a
    # dependency: FastAPI's dependency resolution is a fifth of this request's cost.
    principal = caller(request)
    needs(principal, "submit")
    from_allowed_origin(principal, request.headers.get("origin"))
    org_id = organisation_of(principal, body.org_id)
    submit_rate: SubmitRate = request.app.state.submit_rate
    await submit_rate.check(org_id)  # the key's organisation: a body cannot spend another's
    db: Database = request.app.state.database
    accepted = await db.store_submission(
        NewSubmission(body.template_id, org_id, body.data, datetime.now(UTC), idempotency_key)
    )
    return accepted_response(accepted)


def accepted_response(accepted: Accepted) -> Response:
    """202 with the submission's ids; a repeated idempotency key's answer says so. The ids go
    on the request's log lines (its access line too); a new submission is counted."""
    bind_contextvars(submission_id=str(accepted.submission_id), event_id=str(accepted.event_id))
    if not accepted.replayed:
        _ACCEPTED.inc()
    return replayable_202(
        {
            "submission_id": accepted.submission_id,
            "event_id": accepted.event_id,
            "status": "accepted",
        },
        accepted.replayed,
    )


def replayable_202(answer: dict[str, Any], replayed: bool) -> Response:
    """202 with `answer` as JSON; `Idempotent-Replayed: true` when it is the first answer
    again (a repeated idempotency key: nothing new was stored)."""
    response = Response(orjson.dumps(answer), status_code=202, media_type="application/json")
    if replayed:
        response.headers["idempotent-replayed"] = "true"
    return response


@router.get(
    "/submissions/{submission_id}",
    response_model=SubmissionOut,
    responses={404: {"description": "no such submission"}},
)
async def get_submission(submission_id: UUID, db: Db, principal: Caller) -> dict[str, Any]:
    """The submission, whether its event was published, and the runs it started."""
    needs(principal, "admin")
    missing = f"no submission with id {submission_id}"
    async with db.reading() as conn:
        found = await submissions.get(conn, submission_id)
        if found is None:
            raise NotFound(missing)
        must_see(principal, found["org_id"], missing)
        started = await runs.for_submission(conn, submission_id)
    return {**found, "submission_id": found["id"], "runs": [run_summary(run) for run in started]}
