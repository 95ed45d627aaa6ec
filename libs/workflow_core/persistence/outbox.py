"""The transactional outbox: events written in the same transaction as the change they
announce, published to the stream by the relay (workflow_core.relay)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from workflow_core.events import Event
from workflow_core.persistence.tables import outbox

CHANNEL = "flowline_outbox"
"""NOTIFY channel: a trigger on the outbox signals it after every insert."""


async def add(conn: AsyncConnection, event: Event, *, submission_id: UUID | None = None) -> None:
    """Queue `event` in the caller's transaction. The same event may be queued again (a
    replay); the worker's idempotency makes a repeat harmless."""
    await conn.execute(
        insert(outbox).values(
            event_id=event.event_id,
            event_type=event.type,
            payload=event.payload,
            submission_id=submission_id,
        )
    )


async def claim_unpublished(conn: AsyncConnection, limit: int) -> list[Any]:
    """The oldest unpublished events, locked for this transaction; rows another relay holds are
    skipped, so relays in several processes share the work without publishing twice."""
    query = (
        select(outbox.c.id, outbox.c.event_id, outbox.c.event_type, outbox.c.payload)
        .where(outbox.c.published_at.is_(None))
        .order_by(outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await conn.execute(query))


_MARK_PUBLISHED = text("""
    UPDATE outbox SET published_at = now(), stream_entry_id = v.entry_id
    FROM unnest(CAST(:ids AS bigint[]), CAST(:entry_ids AS text[])) AS v(id, entry_id)
    WHERE outbox.id = v.id
""")


async def mark_published(conn: AsyncConnection, published: Sequence[tuple[int, str]]) -> None:
    """Record the stream entry id each event got."""
    if published:
        await conn.execute(
            _MARK_PUBLISHED,
            {
                "ids": [row_id for row_id, _ in published],
                "entry_ids": [entry for _, entry in published],
            },
        )


async def unpublished_count(conn: AsyncConnection) -> int:
    query = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
    return int((await conn.execute(query)).scalar_one())
