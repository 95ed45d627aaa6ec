"""Signing in and out of the console with an API key, the console's home, and its files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from services.api.console.identity import Looker, Viewer, config
from services.api.console.session import COOKIE, new_session, operator_key, seal
from services.api.console.web import ConsoleRoute, form_of, posted, render, same_origin, see_other
from services.api.keys import KeyRing, Principal
from workflow_core.persistence import api_keys

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
ASSETS = Path(__file__).resolve().parents[1] / "static" / "console"
_FILES = {"console.css": "text/css", "console.js": "text/javascript"}


def home_of(viewer: Viewer) -> str:
    return "/console/runs" if viewer.can("admin") else "/console/inbox"


def _next(asked: str | None, fallback: str) -> str:
    """Only a console page of this site: never an open redirect."""
    if asked and asked.startswith("/console") and not asked.startswith("//"):
        return asked
    return fallback


@router.get("")
async def home(viewer: Looker) -> Response:
    return see_other(home_of(viewer))


@router.get("/sign-in")
async def sign_in_form(request: Request, next: str | None = None) -> Response:
    if config(request).open:
        return see_other(_next(next, "/console/runs"))
    return render("sign_in.html", None, next=_next(next, "/console"))


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    """The key is checked as the API checks a bearer key; a `submit` key is refused (it is
    meant for web pages, not for people). The cookie names the key's id, never its text."""
    same_origin(request)
    fields = await form_of(request)
    target = _next(fields.get("next"), "/console")
    ring: KeyRing = request.app.state.key_ring
    principal = await ring.principal(fields.get("key", "").strip() or None)
    if principal is None:
        return _refused(401, "This key is not valid (unknown, revoked, or mistyped).", target)
    if not principal.can("tasks"):
        return _refused(
            403,
            "This key has only the `submit` scope, for web forms: sign in with a `tasks` or "
            "`admin` key.",
            target,
        )
    who = fields.get("who", "").strip()[:200] or await _key_name(request, principal)
    cfg = config(request)
    key = str(principal.key_id) if principal.key_id else operator_key(cfg.admin_key)
    session = new_session(key, who, now=time.time(), hours=cfg.hours)
    answer = see_other(target)
    answer.set_cookie(
        COOKIE,
        seal(session, cfg.secret),
        max_age=int(cfg.hours * 3600),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer


def _refused(status: int, message: str, target: str) -> Response:
    return render("sign_in.html", None, status=status, error=message, next=target)


async def _key_name(request: Request, principal: Principal) -> str:
    if principal.key_id is None:
        return "operator"
    async with request.app.state.database.reading() as conn:
        found = await api_keys.get(conn, principal.key_id)
    return (found.name if found else None) or str(principal.key_id)


@router.post("/sign-out")
async def sign_out(request: Request, viewer: Looker) -> Response:
    await posted(request, viewer)
    answer = see_other("/console/sign-in")
    answer.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return answer


@router.get("/assets/{name}")
async def asset(name: Annotated[str, PathParam(max_length=40)]) -> Response:
    """The console's style sheet and script (open, like the API docs' files)."""
    if name not in _FILES:
        return Response(status_code=404)
    return FileResponse(
        ASSETS / name, media_type=_FILES[name], headers={"Cache-Control": "max-age=300"}
    )
