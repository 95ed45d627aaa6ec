"""Dead letters: events that failed DELIVERY_LIMIT times (or could never be read), as the
workers left them in `<stream>:dead`; an operator can put one back on the stream."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator

from services.api.access import Caller, operator_only
from services.api.deps import AppSettings, Db, Keys, Redis
from workflow_core import events
from workflow_core.adapters import dead_letter_stream
from workflow_core.errors import Conflict, NotFound
from workflow_core.persistence import revival

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])


STREAM_ID = r"^\d{1,20}-\d{1,20}$"
FIRST_ID = "0-0"


def canonical_entry_id(entry_id: str) -> str:
    """A stream entry id as Redis spells it: `007-01` is entry `7-1`, so it names the same dead
    letter (and the same replay counter) as `7-1`. Redis refuses a part past 64 bits; so do we,
    with a 422 (ValueError)."""
    parts = [int(part) for part in entry_id.split("-")]
    if any(part >= 2**64 for part in parts):
        raise ValueError("not a stream entry id: both numbers must fit in 64 bits")
    return "-".join(map(str, parts))


EntryId = Annotated[
    str,
    Path(pattern=STREAM_ID, description="a stream entry id"),
    AfterValidator(canonical_entry_id),
]
Before = Annotated[
    str | None,
    Query(pattern=STREAM_ID, description="the last id of the previous page"),
    AfterValidator(lambda entry_id: None if entry_id is None else canonical_entry_id(entry_id)),
]


@router.get("")
async def list_dead_letters(
    redis: Redis,
    keys: Keys,
    principal: Caller,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Before = None,
) -> list[dict[str, Any]]:
    """Newest first, with the error, the delivery count and how often each was replayed;
    page on with `before=<the last id>`. The operator's key only: a dead letter may be any
    organisation's event."""
    operator_only(principal, "read dead letters")
    if before == FIRST_ID:
        return []  # nothing comes before the first id (and Redis refuses the range `(0-0`)
    return await dead_letter_stream.dead_letters(redis, keys, count=limit, before=before)


@router.get("/{entry_id}", responses={404: {"description": "no such dead letter"}})
async def get_dead_letter(
    entry_id: EntryId, redis: Redis, keys: Keys, principal: Caller
) -> dict[str, Any]:
    operator_only(principal, "read dead letters")
    letter = await dead_letter_stream.read_dead_letter(redis, keys, entry_id)
    if letter is None:
        raise NotFound(f"no dead letter with id {entry_id}")
    view: dict[str, Any] = letter["view"]
    return view


@router.post(
    "/{entry_id}/replay",
    status_code=202,
    responses={
        404: {"description": "no such dead letter"},
        409: {"description": "replayed too often, or not an event at all"},
    },
)
async def replay_dead_letter(
    entry_id: EntryId,
    db: Db,
    redis: Redis,
    keys: Keys,
    settings: AppSettings,
    principal: Caller,
) -> dict[str, Any]:
    """Queue the event again (through the outbox) and give the runs it failed another go.
    Each replay is counted; after DEAD_LETTER_REPLAY_LIMIT replays of one entry, 409."""
    operator_only(principal, "replay dead letters")
    letter = await dead_letter_stream.read_dead_letter(redis, keys, entry_id)
    if letter is None:
        raise NotFound(f"no dead letter with id {entry_id}")
    try:
        event = events.from_fields(dead_letter_stream.original_fields(letter["fields"]))
    except events.MalformedEvent as error:
        raise Conflict(
            f"dead letter {entry_id} is not a Flowline event ({error}); replaying it cannot succeed"
        ) from None
    replays = await dead_letter_stream.count_replay(redis, keys, entry_id)
    if replays > settings.dead_letter_replay_limit:
        await dead_letter_stream.uncount_replay(redis, keys, entry_id)
        raise Conflict(
            f"dead letter {entry_id} was replayed {replays - 1} times already "
            f"(DEAD_LETTER_REPLAY_LIMIT={settings.dead_letter_replay_limit})"
        )
    try:
        async with db.transaction() as conn:
            revived = await revival.replay_event(conn, event)
    except BaseException:
        await dead_letter_stream.uncount_replay(redis, keys, entry_id)
        raise
    return {
        "dead_letter_id": entry_id,
        "event_id": str(event.event_id),
        "replays": replays,
        "runs_revived": revived,
    }
