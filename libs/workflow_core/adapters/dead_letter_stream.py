"""The dead-letter stream (S:dead, with S:errors and S:replays; key names in streams.py):
an entry that failed too often moved there with its last error, and the dead letters read
back, as the API shows them, and counted as they are replayed. Apart from streams.py, which
reads and acknowledges the main stream: only a failing entry or an operator comes here."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import redis.asyncio as aioredis

from workflow_core.adapters.streams import Entry, StreamKeys, ack


async def remember_error(
    redis: aioredis.Redis, keys: StreamKeys, entry_id: str, error: str
) -> None:
    await redis.hset(keys.errors, entry_id, error[:2000])


async def move_to_dead_letters(
    redis: aioredis.Redis,
    keys: StreamKeys,
    entry: Entry,
    error: str | None,
    consumer: str,
    *,
    max_length: int = 10_000,
) -> str:
    """Copy the entry to the dead-letter stream with its error and delivery count, then
    acknowledge it on the main stream, in that order (a crash between repeats the copy, never
    loses the entry). The dead-letter stream keeps about `max_length` entries, the newest."""
    last_error = error or await redis.hget(keys.errors, entry.id) or "unknown error"
    fields = {
        "original_id": entry.id,
        "deliveries": str(entry.deliveries),
        "error": last_error,
        "consumer": consumer,
        **{
            f"original_{name}" if name in {"error", "deliveries"} else name: value
            for name, value in (entry.fields or {}).items()
        },
    }
    dead_id = await redis.xadd(
        keys.dead,
        fields,  # type: ignore[arg-type]
        maxlen=max_length,
        approximate=True,
    )
    await ack(redis, keys, [entry.id])
    return str(dead_id)


def dead_letter_view(entry_id: str, fields: dict[str, str], replays: int) -> dict[str, Any]:
    """A dead-letter entry as the API shows it."""
    event: Any = fields.get("payload")
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
        event = orjson.loads(event)  # malformed payloads are shown as the text they were
    return {
        "id": entry_id,
        "dead_at_ms": int(entry_id.split("-", 1)[0]),
        "original_id": fields.get("original_id"),
        "deliveries": int(fields.get("deliveries", "0") or 0),
        "error": fields.get("error"),
        "consumer": fields.get("consumer"),
        "type": fields.get("type"),
        "event_id": fields.get("event_id"),
        "event": event,
        "replays": replays,
    }


async def dead_letters(
    redis: aioredis.Redis, keys: StreamKeys, *, count: int, before: str | None = None
) -> list[dict[str, Any]]:
    """Dead letters, newest first; `before` pages on (an id from the previous page)."""
    entries: list[Any] = list(
        await redis.xrevrange(keys.dead, max=f"({before}" if before else "+", min="-", count=count)
        or []
    )
    ids: list[Any] = [entry_id for entry_id, _ in entries]
    counts: list[Any] = list(await redis.hmget(keys.replays, ids)) if ids else []
    return [
        dead_letter_view(str(entry_id), fields, int(n or 0))
        for (entry_id, fields), n in zip(entries, counts, strict=True)
    ]


async def read_dead_letter(
    redis: aioredis.Redis, keys: StreamKeys, entry_id: str
) -> dict[str, Any] | None:
    """One dead letter: its raw `fields` and its API `view`; None when there is none."""
    entries: list[Any] = list(
        await redis.xrange(keys.dead, min=entry_id, max=entry_id, count=1) or []
    )
    if not entries:
        return None
    replays = await redis.hget(keys.replays, entry_id)
    fields = dict(entries[0][1])
    return {"fields": fields, "view": dead_letter_view(entry_id, fields, int(replays or 0))}


async def count_replay(redis: aioredis.Redis, keys: StreamKeys, entry_id: str) -> int:
    """Count one more replay of a dead letter (atomically); returns the new count."""
    return int(await redis.hincrby(keys.replays, entry_id, 1))


async def uncount_replay(redis: aioredis.Redis, keys: StreamKeys, entry_id: str) -> None:
    await redis.hincrby(keys.replays, entry_id, -1)


def original_fields(fields: dict[str, str]) -> dict[str, str]:
    """The fields of the entry as it was on the main stream."""
    return {
        name: value for name, value in fields.items() if name in {"type", "event_id", "payload"}
    }
