"""Submissions: a form as it was received. Stored together with its outbox event, and with its
idempotency key when the client sent one (all in one statement)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import select

from workflow_core import events
from workflow_core.ids import new_id
from workflow_core.persistence import sql
from workflow_core.persistence.pool import Connection, Executor, Pool, json_text
from workflow_core.persistence.tables import outbox as outbox_table
from workflow_core.persistence.tables import submissions

IDEMPOTENCY_WINDOW = timedelta(hours=24)
"""How long an idempotency key keeps its first answer; after it, the key is new again."""


@dataclass(frozen=True, slots=True)
class NewSubmission:
    template_id: str
    org_id: str
    data: dict[str, Any]
    received_at: datetime
    idempotency_key: str | None = None
    """The client's Idempotency-Key: within IDEMPOTENCY_WINDOW, a second form of the same
    organisation with the same key stores nothing and gets the first one's answer."""
    traceparent: str | None = None
    """The W3C trace context of the request that brought the form (OTEL_ENABLED): its event
    carries it, so the worker's spans join the request's trace."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to a form: the submission and the event that stand for it."""

    submission_id: UUID
    event_id: UUID
    event: events.Event | None
    """The event to publish when this form stored the submission; None when an earlier form
    with the same idempotency key did, and this one only gets its answer again."""

    @property
    def replayed(self) -> bool:
        return self.event is None


# Forms without an idempotency key (most of them): the submissions and their events.
_STORE_PLAIN = """
    WITH received AS (
        SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
            id uuid, template_id text, org_id text, data jsonb, created_at timestamptz,
            event_id uuid, payload jsonb)
    ), stored AS (
        INSERT INTO submissions (id, template_id, org_id, data, created_at)
        SELECT id, template_id, org_id, data, created_at FROM received
    )
    INSERT INTO outbox (event_id, event_type, payload, submission_id)
    SELECT event_id, $2, payload, id FROM received
"""

# With keys, one statement too. The keys first: ON CONFLICT waits for a concurrent insert of
# the same key, then always updates, so that RETURNING gives the row as committed (a plain
# read in this statement's snapshot might not see it); the update takes the key over only
# when it is older than the window. Then the submissions and events of the forms that won
# their key or brought none, then the answers of the forms that lost theirs.
_STORE = """
    WITH received AS (
        SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
            id uuid, template_id text, org_id text, data jsonb, created_at timestamptz,
            event_id uuid, payload jsonb, idempotency_key text)
    ), keyed AS (
        INSERT INTO idempotency_keys AS k (org_id, key, submission_id, event_id)
        SELECT org_id, idempotency_key, id, event_id FROM received
        WHERE idempotency_key IS NOT NULL
        ORDER BY org_id, idempotency_key
        ON CONFLICT (org_id, key) DO UPDATE SET
            submission_id = CASE WHEN k.created_at < now() - $3::interval
                THEN excluded.submission_id ELSE k.submission_id END,
            event_id = CASE WHEN k.created_at < now() - $3::interval
                THEN excluded.event_id ELSE k.event_id END,
            created_at = CASE WHEN k.created_at < now() - $3::interval
                THEN excluded.created_at ELSE k.created_at END
        RETURNING k.org_id, k.key, k.submission_id, k.event_id
    ), fresh AS (
        SELECT * FROM received
        WHERE idempotency_key IS NULL OR id IN (SELECT submission_id FROM keyed)
    ), stored AS (
        INSERT INTO submissions (id, template_id, org_id, data, created_at)
        SELECT id, template_id, org_id, data, created_at FROM fresh
    ), queued AS (
        INSERT INTO outbox (event_id, event_type, payload, submission_id)
        SELECT event_id, $2, payload, id FROM fresh
    )
    SELECT r.id, k.submission_id, k.event_id
    FROM received r JOIN keyed k ON k.org_id = r.org_id AND k.key = r.idempotency_key
    WHERE k.submission_id <> r.id
"""


def prepare(forms: list[NewSubmission]) -> list[events.Event]:
    """Each form's `form_submitted` event, naming the submission id it will be stored under.
    Made before the statement, so that a caller who loses the statement's answer can look the
    submissions up (`existing`)."""
    return [
        events.form_submitted(
            new_id(),
            new_id(),
            form.template_id,
            form.org_id,
            form.data,
            form.received_at,
            form.traceparent,
        )
        for form in forms
    ]


def _row(form: NewSubmission, event: events.Event) -> dict[str, Any]:
    return {
        "id": event.payload["submission_id"],
        "template_id": form.template_id,
        "org_id": form.org_id,
        "data": form.data,
        "created_at": form.received_at,
        "event_id": event.event_id,
        "payload": event.payload,
        "idempotency_key": form.idempotency_key,
    }


async def store(
    pg: Pool | Connection,
    forms: list[NewSubmission],
    made: list[events.Event],
    *,
    timeout: float | None = None,
) -> list[Accepted]:
    """Store the forms with their events (`prepare`) in one statement, so one transaction: no
    submission exists without its event. A form whose organisation used its idempotency key
    within IDEMPOTENCY_WINDOW stores nothing and gets that submission's answer; so do the later
    forms of this call that repeat an earlier one's key."""
    first: dict[tuple[str, str], int] = {}
    repeats: dict[int, int] = {}
    rows = []
    for index, (form, event) in enumerate(zip(forms, made, strict=True)):
        if form.idempotency_key is not None:
            scope = (form.org_id, form.idempotency_key)
            if scope in first:
                repeats[index] = first[scope]
                continue
            first[scope] = index
        rows.append(_row(form, event))
    earlier: dict[str, Accepted] = {}
    if first:
        found = await pg.fetch(
            _STORE, json_text(rows), events.FORM_SUBMITTED, IDEMPOTENCY_WINDOW, timeout=timeout
        )
        earlier = {
            str(row["id"]): Accepted(
                UUID(str(row["submission_id"])), UUID(str(row["event_id"])), None
            )
            for row in found
        }
    else:  # the plain statement costs a third less than the keyed one without keys
        await pg.execute(_STORE_PLAIN, json_text(rows), events.FORM_SUBMITTED, timeout=timeout)
    answers = [
        earlier.get(event.payload["submission_id"])
        or Accepted(UUID(event.payload["submission_id"]), event.event_id, event)
        for event in made
    ]
    for index, same in repeats.items():
        answer = answers[same]
        answers[index] = Accepted(answer.submission_id, answer.event_id, None)
    return answers


async def create_many(pg: Pool | Connection, forms: list[NewSubmission]) -> list[events.Event]:
    """Store forms that carry no idempotency key (see `store`); each one's event."""
    assert all(form.idempotency_key is None for form in forms), "use store() for keyed forms"
    made = prepare(forms)
    await store(pg, forms, made)
    return made


async def create(
    pg: Pool | Connection, *, template_id: str, org_id: str, data: dict[str, Any], now: datetime
) -> tuple[UUID, UUID]:
    """Store one submission and its event (see `create_many`); (submission id, event id)."""
    [event] = await create_many(pg, [NewSubmission(template_id, org_id, data, now)])
    return UUID(event.payload["submission_id"]), event.event_id


async def existing(pg: Pool | Connection, submission_ids: list[UUID]) -> set[UUID]:
    """Which of these submissions are stored."""
    rows = await pg.fetch("SELECT id FROM submissions WHERE id = ANY($1::uuid[])", submission_ids)
    return {UUID(str(row["id"])) for row in rows}


KEY_PRUNE_BATCH = 10_000


async def forget_expired_keys(pg: Pool | Connection, *, limit: int = KEY_PRUNE_BATCH) -> int:
    """Delete up to `limit` idempotency keys older than IDEMPOTENCY_WINDOW (a repeat of one
    would be a new submission anyway); how many were deleted."""
    status = await pg.execute(
        """
        DELETE FROM idempotency_keys WHERE (org_id, key) IN (
            SELECT org_id, key FROM idempotency_keys
            WHERE created_at < now() - $1::interval LIMIT $2)
        """,
        IDEMPOTENCY_WINDOW,
        limit,
    )
    return int(status.split()[-1])


async def get(db: Executor, submission_id: UUID) -> dict[str, Any] | None:
    query = (
        select(submissions, outbox_table.c.event_id, outbox_table.c.published_at)
        .outerjoin(
            outbox_table,
            (outbox_table.c.submission_id == submissions.c.id)
            & (outbox_table.c.event_type == events.FORM_SUBMITTED),
        )
        .where(submissions.c.id == submission_id)
    )
    return sql.mapping(await sql.fetchrow(db, query))
