"""Dead letters with their error, and replay (the operator's key only, as in the JSON API: a
dead letter may be any organisation's event)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response

from services.api.console.identity import Looker
from services.api.console.web import ConsoleRoute, posted, render, see_other
from services.api.deps import AppSettings, Db, Keys, Redis
from services.api.routes import dead_letters as letter_routes
from workflow_core.errors import Unprocessable

router = APIRouter(
    prefix="/console/dead-letters", route_class=ConsoleRoute, include_in_schema=False
)


@router.get("")
async def letter_list(
    viewer: Looker, redis: Redis, keys: Keys, before: str | None = None, replayed: str = ""
) -> Response:
    if before is not None:
        before = _entry_id(before)
    letters = await letter_routes.list_dead_letters(
        redis, keys, viewer.principal, limit=50, before=before
    )
    return render(
        "dead_letters.html",
        viewer,
        letters=letters,
        next_before=letters[-1]["id"] if len(letters) == 50 else None,
        replayed=replayed,
    )


def _entry_id(text: str) -> str:
    """A stream entry id as the JSON routes take it (a 422 page otherwise)."""
    if not re.fullmatch(letter_routes.STREAM_ID, text):
        raise Unprocessable("entry_id", "not a stream entry id such as 1700000000000-0")
    try:
        return letter_routes.canonical_entry_id(text)
    except ValueError as error:
        raise Unprocessable("entry_id", str(error)) from None


@router.post("/{entry_id}/replay")
async def replay(
    request: Request,
    entry_id: str,
    viewer: Looker,
    db: Db,
    redis: Redis,
    keys: Keys,
    settings: AppSettings,
) -> Response:
    await posted(request, viewer)
    answer = await letter_routes.replay_dead_letter(
        _entry_id(entry_id), db, redis, keys, settings, viewer.principal
    )
    return see_other(f"/console/dead-letters?replayed={answer['dead_letter_id']}")
