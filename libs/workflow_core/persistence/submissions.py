"""Submissions: a form as it was received. Stored together with its outbox event."""

from __future__ import annotations

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

_CREATE = """
    WITH submission AS (
        INSERT INTO submissions (id, template_id, org_id, data, created_at)
        VALUES ($1, $2, $3, $4::jsonb, $5)
    )
    INSERT INTO outbox (event_id, event_type, payload, submission_id)
    VALUES ($6, $7, $8::jsonb, $1)
"""


async def create(
    pg: Connection | Pool, *, template_id: str, org_id: str, data: dict[str, Any], now: datetime
) -> tuple[UUID, UUID]:
    """Store the submission and its `form_submitted` event in one statement (so one
    transaction): neither exists without the other. Returns (submission id, event id)."""
    submission_id, event_id = new_id(), new_id()
    event = events.form_submitted(event_id, submission_id, template_id, org_id, data, now)
    await pg.execute(
        _CREATE,
        submission_id,
        template_id,
        org_id,
        json_text(data),
        now,
        event_id,
        event.type,
        json_text(event.payload),
    )
    return submission_id, event_id


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
