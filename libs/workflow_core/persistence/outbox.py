"""The transactional outbox: events written in the same transaction as the change they
announce, published to the stream by the relay (workflow_core.relay)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import func, insert, update

from workflow_core.events import FORM_SUBMITTED, POSTED, Event
from workflow_core.persistence import sql
from workflow_core.persistence.pool import Connection, Executor, Pool
from workflow_core.persistence.tables import outbox

FAST_PATH_KINDS = [FORM_SUBMITTED, POSTED]
"""Events the API publishes itself right after storing them (the relay's grace period)."""

CHANNEL = "flowline_outbox"
"""NOTIFY channel: a trigger on the outbox signals it after every insert."""


async def add(conn: Connection, event: Event, *, submission_id: UUID | None = None) -> None:
    """Queue `event` in the caller's transaction. The same event may be queued again (a
    replay); the worker's idempotency makes a repeat harmless."""
    await sql.execute(
        conn,
        insert(outbox).values(
            event_id=event.event_id,
            event_type=event.type,
            payload=event.payload,
            submission_id=submission_id,
        ),
    )


async def mark_taken(db: Executor, event_id: UUID) -> None:
    """The event was handled without starting runs the usual way (it was dead-lettered)."""
    await sql.execute(
        db,
        update(outbox)
        .where(outbox.c.event_id == event_id, outbox.c.taken_at.is_(None))
        .values(taken_at=func.now()),
    )


async def claim_unpublished(
    conn: Connection, limit: int, grace_seconds: float = 0.0
) -> list[tuple[int, Any, str, Any]]:
    """The oldest unpublished events as (row id, event id, type, payload), locked for the
    caller's transaction; rows another relay holds are skipped, so relays in several processes
    share the work without publishing twice. A submission's (or a posted event's) event
    younger than `grace_seconds` is left to the fast path."""
    rows = await conn.fetch(
        "SELECT id, event_id, event_type, payload FROM outbox WHERE published_at IS NULL "
        "AND (event_type <> ALL($2::text[]) OR created_at < now() - make_interval(secs => $3)) "
        "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
        FAST_PATH_KINDS,
        grace_seconds,
    )
    return [(row[0], row[1], row[2], row[3]) for row in rows]


async def mark_published(conn: Connection, published: Sequence[tuple[int, str]]) -> None:
    """Record the stream entry id each event got."""
    if published:
        await conn.execute(
            "UPDATE outbox SET published_at = now(), stream_entry_id = v.entry_id, "
            "publish_count = publish_count + 1 "
            "FROM unnest($1::bigint[], $2::text[]) AS v(id, entry_id) "
            # `= ANY` makes the plan an index lookup however large the table has grown
            # (a cached generic plan may otherwise scan it all for every batch).
            "WHERE outbox.id = ANY($1::bigint[]) AND outbox.id = v.id",
            [row_id for row_id, _ in published],
            [entry for _, entry in published],
        )


async def claim_untaken(
    conn: Connection, limit: int, published_before_seconds: float
) -> list[tuple[int, Any, str, Any, str | None]]:
    """Events published at least `published_before_seconds` ago that no worker took (Redis
    lost them, or they wait behind a backlog), oldest first, locked like `claim_unpublished`,
    with the stream entry id each was last published as."""
    rows = await conn.fetch(
        "SELECT id, event_id, event_type, payload, stream_entry_id FROM outbox "
        "WHERE taken_at IS NULL AND published_at IS NOT NULL "
        "AND published_at <= now() - make_interval(secs => $2) "
        "ORDER BY published_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
        published_before_seconds,
    )
    return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]


async def add_events(conn: Connection, events: Sequence[Event]) -> None:
    """Queue events (on a plain connection, in the caller's transaction)."""
    if events:
        await conn.execute(
            "INSERT INTO outbox (event_id, event_type, payload) "
            "SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])",
            [event.event_id for event in events],
            [event.type for event in events],
            [event.payload for event in events],
        )


async def prune_published(conn: Connection, older_than_seconds: float, limit: int) -> int:
    """Delete, among the `limit` oldest events, those a worker took more than
    `older_than_seconds` ago; how many went. Rows not yet published or taken are never
    touched. Looking only at the oldest rows (the primary key's order) keeps each call cheap
    however large the table is. SKIP LOCKED lets relays in several processes prune side by
    side without waiting on each other."""
    status = await conn.execute(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM ("
        "SELECT id, taken_at FROM outbox ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) AS oldest "
        "WHERE taken_at < now() - make_interval(secs => $1))",
        older_than_seconds,
        limit,
    )
    return int(status.split()[-1])


async def mark_published_events(pg: Pool, published: Sequence[tuple[UUID, str]]) -> None:
    """Record the stream entry ids of events the fast path published (by event id: a replayed
    event's earlier rows were marked long ago)."""
    if published:
        await pg.execute(
            "UPDATE outbox SET published_at = now(), stream_entry_id = v.entry_id, "
            "publish_count = publish_count + 1 "
            "FROM unnest($1::uuid[], $2::text[]) AS v(event_id, entry_id) "
            "WHERE outbox.event_id = ANY($1::uuid[]) AND outbox.event_id = v.event_id "
            "AND outbox.published_at IS NULL",
            [event_id for event_id, _ in published],
            [entry for _, entry in published],
        )


async def count_unpublished(db: Executor) -> int:
    """How many events wait to be published (a partial index holds exactly these)."""
    return int(await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
