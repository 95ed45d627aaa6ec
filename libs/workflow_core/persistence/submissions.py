"""Submissions: a form as it was received. Stored together with its outbox event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from workflow_core import events
from workflow_core.ids import new_id
from workflow_core.persistence.pg import Connection, Pool, json_text
from workflow_core.persistence.tables import outbox as outbox_table
from workflow_core.persistence.tables import submissions


@dataclass(frozen=True, slots=True)
class NewSubmission:
    template_id: str
    org_id: str
    data: dict[str, Any]
    received_at: datetime


_CREATE = """
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


async def create_many(pg: Pool | Connection, forms: list[NewSubmission]) -> list[events.Event]:
    """Store submissions with their `form_submitted` events, all in one statement (so one
    transaction): no submission exists without its event. Returns each one's event (its
    payload names the submission)."""
    made = [
        events.form_submitted(
            new_id(), new_id(), form.template_id, form.org_id, form.data, form.received_at
        )
        for form in forms
    ]
    rows = [
        {
            "id": event.payload["submission_id"],
            "template_id": form.template_id,
            "org_id": form.org_id,
            "data": form.data,
            "created_at": form.received_at,
            "event_id": event.event_id,
            "payload": event.payload,
        }
        for form, event in zip(forms, made, strict=True)
    ]
    await pg.execute(_CREATE, json_text(rows), events.FORM_SUBMITTED)
    return made


async def create(
    pg: Pool | Connection, *, template_id: str, org_id: str, data: dict[str, Any], now: datetime
) -> tuple[UUID, UUID]:
    """Store one submission and its event (see `create_many`); (submission id, event id)."""
    [event] = await create_many(pg, [NewSubmission(template_id, org_id, data, now)])
    return UUID(event.payload["submission_id"]), event.event_id


async def get(conn: AsyncConnection, submission_id: UUID) -> dict[str, Any] | None:
    query = (
        select(submissions, outbox_table.c.event_id, outbox_table.c.published_at)
        .outerjoin(
            outbox_table,
            (outbox_table.c.submission_id == submissions.c.id)
            & (outbox_table.c.event_type == events.FORM_SUBMITTED),
        )
        .where(submissions.c.id == submission_id)
    )
    row = (await conn.execute(query)).first()
    return dict(row._mapping) if row else None
