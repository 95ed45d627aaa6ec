"""Events posted to POST /events, and the runs waiting for them (wait_for_event steps).

An event is stored with its outbox row in one statement, like a submission, and kept
EVENT_RETENTION_SECONDS. A wait is settled exactly once, by whichever comes first:

- the event, when a worker takes it (`settle_by_event`): every open wait of its organisation
  and type whose correlation it matches is settled with it, and a `run.resume` (cause `event`)
  is queued for each, in one transaction;
- an event that came before the wait was stored (`settle_from_kept`, run by the wait's
  `event_check` timer, due as soon as the wait is stored): the first kept event of the type
  and organisation received since the run's own event, that matches;
- the wait's timeout (`time_out`).

Neither side can miss the other: the check runs after the wait's row committed, and a worker
takes an event after its row committed, so whichever of the two looks last sees the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from workflow_core import events
from workflow_core.ids import new_id
from workflow_core.persistence import outbox
from workflow_core.persistence.pool import Connection, Executor, json_text

EVENT_OUTCOME = "event"
TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event_id: UUID
    event: events.Event | None
    """The event to publish when this request stored it; None when an earlier one with the
    same `id` (or Idempotency-Key) did, and this one gets its answer again."""

    @property
    def replayed(self) -> bool:
        return self.event is None


_STORE = """
    WITH stored AS (
        INSERT INTO received_events (id, org_id, type, data, dedup_key, received_at)
        VALUES ($1, $2, $3, $4::jsonb, $5, $6)
        ON CONFLICT (org_id, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
        RETURNING id
    ), queued AS (
        INSERT INTO outbox (event_id, event_type, payload)
        SELECT id, $7, $8::jsonb FROM stored
    )
    SELECT id FROM stored
"""


async def store(
    db: Executor, event: events.Event, dedup_key: str | None, received_at: datetime
) -> StoredEvent:
    """Keep the event and queue it for the stream, in one statement. A `dedup_key` the
    organisation used before (while that event is kept) stores nothing: the first answer."""
    payload = event.payload
    stored = await db.fetchval(
        _STORE,
        event.event_id,
        payload["org_id"],
        payload["event_type"],
        json_text(payload["data"]),
        dedup_key,
        received_at,
        event.type,
        json_text(payload),
    )
    if stored is not None:
        return StoredEvent(event.event_id, event)
    # ON CONFLICT waited for a concurrent insert of the key to commit: this read sees it.
    first = await db.fetchval(
        "SELECT id FROM received_events WHERE org_id = $1 AND dedup_key = $2",
        payload["org_id"],
        dedup_key,
    )
    return StoredEvent(UUID(str(first)), None)


def document(payload: dict[str, Any]) -> dict[str, Any]:
    """What a run sees of an event it waited for (`steps.<id>.event`), and what a wait's
    `match.path` is read from."""
    return {
        name: payload.get(name)
        for name in ("event_id", "event_type", "org_id", "data", "received_at")
    }


_DOCUMENT_SQL = (
    "jsonb_build_object('event_id', e.id::text, 'event_type', e.type, 'org_id', e.org_id, "
    "'data', e.data, 'received_at', to_jsonb(e.received_at))"
)
_MATCHES = "(w.path IS NULL OR ({doc} #>> string_to_array(w.path, '.')) = w.expected)"


async def settle_by_event(conn: Connection, payload: dict[str, Any]) -> int:
    """Settle the open waits this event matches and queue their runs' resumes, in the caller's
    transaction; how many. Again for the same event: nothing (they are settled)."""
    doc = document(payload)
    rows = await conn.fetch(
        "UPDATE event_waits w SET settled_at = now(), outcome = $5, event = $1::jsonb "
        "WHERE w.org_id = $2 AND w.event_type = $3 AND w.settled_at IS NULL "
        "AND (w.since IS NULL OR w.since <= $4::timestamptz) AND "
        + _MATCHES.format(doc="$1::jsonb")
        + " RETURNING w.run_id, w.step_seq",
        json_text(doc),
        payload["org_id"],
        payload["event_type"],
        _received_at(payload),
        EVENT_OUTCOME,
    )
    await outbox.add_events(conn, [_resume(row["run_id"], row["step_seq"]) for row in rows])
    return len(rows)


async def settle_from_kept(conn: Connection, run_id: UUID, step_seq: int) -> bool:
    """Settle the wait with the first kept event that matches it, received since its run's
    own event; whether it was (False also when the wait was settled already)."""
    settled = await conn.fetchval(
        "UPDATE event_waits SET settled_at = now(), outcome = $3, event = found.doc "
        f"FROM (SELECT {_DOCUMENT_SQL} AS doc FROM event_waits w JOIN received_events e "
        "ON e.org_id = w.org_id AND e.type = w.event_type "
        "AND (w.since IS NULL OR e.received_at >= w.since) "
        "WHERE w.run_id = $1 AND w.step_seq = $2 AND "
        + _MATCHES.format(doc=_DOCUMENT_SQL)
        + " ORDER BY e.received_at, e.id LIMIT 1) AS found "
        "WHERE event_waits.run_id = $1 AND event_waits.step_seq = $2 "
        "AND event_waits.settled_at IS NULL RETURNING true",
        run_id,
        step_seq,
        EVENT_OUTCOME,
    )
    return bool(settled)


async def time_out(db: Executor, run_id: UUID, step_seq: int) -> None:
    """Settle the wait as timed out, unless an event settled it first."""
    await db.execute(
        "UPDATE event_waits SET settled_at = now(), outcome = $3 "
        "WHERE run_id = $1 AND step_seq = $2 AND settled_at IS NULL",
        run_id,
        step_seq,
        TIMED_OUT,
    )


async def get_wait(db: Executor, run_id: UUID, step_seq: int) -> dict[str, Any] | None:
    row = await db.fetchrow(
        "SELECT * FROM event_waits WHERE run_id = $1 AND step_seq = $2", run_id, step_seq
    )
    return dict(row) if row is not None else None


async def forget_old(db: Executor, older_than: timedelta, limit: int = 10_000) -> int:
    """Delete up to `limit` events received longer than `older_than` ago; how many."""
    status = await db.execute(
        "DELETE FROM received_events WHERE id IN (SELECT id FROM received_events "
        "WHERE received_at < now() - $1::interval LIMIT $2)",
        older_than,
        limit,
    )
    return int(status.split()[-1])


def _received_at(payload: dict[str, Any]) -> datetime | None:
    value = payload.get("received_at")
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _resume(run_id: Any, step_seq: int) -> events.Event:
    return events.run_resume(new_id(), UUID(str(run_id)), "event", step_seq=step_seq)
