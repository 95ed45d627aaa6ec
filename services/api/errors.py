"""How errors become HTTP answers: every one is JSON with a `detail`, and bad input is a 4xx
that says what is wrong, never a 500."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from workflow_core.errors import (
    Conflict,
    DefinitionInvalid,
    Forbidden,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
    Unprocessable,
)
from workflow_core.log import get_logger
from workflow_core.validation.problems import format_path

log = get_logger(__name__)


def _problem(error: dict[str, Any]) -> dict[str, Any]:
    if error.get("type") == "json_invalid":  # its loc is a character offset, not a path
        where = [part for part in error.get("loc", ()) if isinstance(part, int)]
        reason = str((error.get("ctx") or {}).get("error") or "not JSON")
        at = f" at character {where[0]}" if where else ""
        return {
            "loc": ["body"],
            "path": "body",
            "msg": f"the body is not valid JSON: {reason}{at}",
            "type": "json_invalid",
        }
    loc = [part for part in error.get("loc", ()) if part != "body"]
    return {
        "loc": list(error.get("loc", ())),
        "path": format_path(loc) if loc else "body",
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "")),
    }


async def _validation(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": [_problem(dict(e)) for e in error.errors()]}, status_code=422)


async def _definition(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DefinitionInvalid)
    return JSONResponse({"detail": error.problems}, status_code=422)


async def _unprocessable(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, Unprocessable)
    problem = {"loc": ["body", error.path], "path": error.path, "msg": error.reason}
    return JSONResponse({"detail": [{**problem, "type": "value_error"}]}, status_code=422)


async def _too_large(_: Request, error: Exception) -> JSONResponse:
    """A dry run that would render more than the limits allow (MAX_RENDERED_BYTES,
    MAX_DRY_RUN_BYTES): 422 naming where in the definition it stopped."""
    assert isinstance(error, TooLarge)
    problem = {
        "loc": ["body", "definition", *error.loc],
        "path": format_path(error.loc),
        "msg": error.message,
        "type": "too_large",
    }
    return JSONResponse({"detail": [problem]}, status_code=422)


def _status(code: int) -> Any:
    async def handler(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=code)

    return handler


async def _unavailable(request: Request, error: Exception) -> JSONResponse:
    log.warning("dependency_unavailable", route=_route(request), error=str(error))
    return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "1"})


async def _rate_limited(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RateLimited)
    return JSONResponse(
        {"detail": error.message},
        status_code=429,
        headers={"Retry-After": str(error.retry_after)},
    )


# FastAPI's answer to a body the JSON parser gave up on (too deep, a number too long).
_UNPARSABLE = "There was an error parsing the body"


async def _http(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    if error.status_code == 400 and error.detail == _UNPARSABLE:
        problem = {
            "loc": ["body"],
            "path": "body",
            "type": "json_invalid",
            "msg": "the body cannot be read as JSON: it is not UTF-8, nests too deeply, "
            "or holds a number too long",
        }
        return JSONResponse({"detail": [problem]}, status_code=422)
    headers = getattr(error, "headers", None)
    if error.status_code == 405:
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=headers)


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (the router's 405 names only the methods
    of the first route that matched the path): each is asked of the router."""
    scope = request.scope
    probe = {key: scope[key] for key in ("type", "path", "root_path", "headers") if key in scope}
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**probe, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    )


def _data_error(error: BaseException) -> asyncpg.DataError | None:
    """PostgreSQL's (or asyncpg's) refusal of a value, however it was wrapped on the way."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, asyncpg.DataError):
            return seen
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    """The last resort. A value the database refused (a character or number it cannot hold,
    that no check above caught) is the request's fault: 422 with PostgreSQL's reason. Anything
    else is ours: logged with its traceback, and a JSON 500 that says so."""
    refused = _data_error(error)
    if refused is not None:
        reason = str(refused).splitlines()[0]
        problem = {"loc": [], "path": "request", "type": "value_error", "msg": reason}
        return JSONResponse({"detail": [problem]}, status_code=422)
    log.exception("request_failed", method=request.method, route=_route(request))
    return JSONResponse(
        {"detail": "internal error: the request failed on the server side (see its log)"},
        status_code=500,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(DefinitionInvalid, _definition)
    app.add_exception_handler(TooLarge, _too_large)
    app.add_exception_handler(NotFound, _status(404))
    app.add_exception_handler(Forbidden, _status(403))
    app.add_exception_handler(Unprocessable, _unprocessable)
    app.add_exception_handler(Conflict, _status(409))
    app.add_exception_handler(Unavailable, _unavailable)
    app.add_exception_handler(RateLimited, _rate_limited)
    app.add_exception_handler(HTTPException, _http)
    # Database errors by class, so they are answered like the ones above; the bare Exception
    # handler runs outside them (Starlette re-raises its exception for the server to log).
    app.add_exception_handler(DBAPIError, _unexpected)
    app.add_exception_handler(asyncpg.DataError, _unexpected)
    app.add_exception_handler(Exception, _unexpected)


def _route(request: Request) -> str:
    """The route template, never the raw path: a path may carry a key (`/f/{key}/...`)."""
    return str(getattr(request.scope.get("route"), "path_format", "unmatched"))
