"""What every console page shares: rendering a template, reading a posted form (its CSRF token
and its Origin checked), and turning errors into HTML pages with the JSON routes' statuses."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ValidationError

from services.api.console.identity import SignInNeeded, Viewer
from services.api.console.session import csrf_matches
from workflow_core.errors import Conflict, Forbidden, NotFound, Unavailable, Unprocessable

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_FORM_BYTES = 64 * 1024
# Pages are never cached (they show live state and a session's token), nor framed.
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "Referrer-Policy": "same-origin",
}
_STATUS = {NotFound: 404, Forbidden: 403, Conflict: 409, Unprocessable: 422, Unavailable: 503}

environment = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True
)
environment.globals["utc"] = UTC  # times are shown in UTC, and say so


def render(
    template: str, viewer: Viewer | None, *, status: int = 200, **context: Any
) -> HTMLResponse:
    html = environment.get_template(template).render(viewer=viewer, **context)
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def error_page(status: int, message: str, viewer: Viewer | None = None) -> HTMLResponse:
    page = render("error.html", viewer, status=status, status_code=status, message=message)
    if status == 503:
        page.headers["Retry-After"] = "1"
    return page


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


class ConsoleRoute(APIRoute):
    """A console route: no session sends the browser to sign in; a refusal, a missing object,
    a conflict or bad input is an HTML page with the status the JSON API would give."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded:
                back = quote(
                    request.url.path + (f"?{request.url.query}" if request.url.query else "")
                )
                return see_other(f"/console/sign-in?next={back}")
            except (NotFound, Forbidden, Conflict, Unprocessable, Unavailable) as error:
                return error_page(_STATUS[type(error)], str(error))
            except RequestValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in error.errors()
                )
                return error_page(422, f"this request is not valid: {problems}")

        return guarded


def same_origin(request: Request) -> None:
    """A form posted from another site is refused (with the CSRF token, a second guard): the
    browser's Origin (or, without one, its Referer) must name this host."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed is None:
        return  # not a browser (browsers send Origin with every POST): the token still decides
    if urlsplit(claimed).netloc != request.headers.get("host", ""):
        raise Forbidden("this form was posted from another site")


async def form_of(request: Request) -> dict[str, str]:
    """The posted fields (`application/x-www-form-urlencoded`; a repeated name keeps its last
    value). The body is bounded: a console form is a few fields."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Unprocessable("body", f"a console form is at most {MAX_FORM_BYTES} bytes")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        raise Unprocessable("body", "the form is not URL-encoded UTF-8 text") from None


_Model = TypeVar("_Model", bound=BaseModel)


def built(model: type[_Model], **fields: Any) -> _Model:
    """The API's request model from a form's fields; the first problem is a 422 naming its
    field, as the JSON route would answer."""
    try:
        return model(**fields)
    except ValidationError as error:
        problem = error.errors()[0]
        raise Unprocessable(str(problem["loc"][0]), str(problem["msg"])) from None


async def posted(request: Request, viewer: Viewer) -> dict[str, str]:
    """A form's fields, once its origin and its CSRF token are checked (403 otherwise)."""
    same_origin(request)
    fields = await form_of(request)
    if not csrf_matches(viewer.csrf, fields.get("csrf")):
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page and try again")
    return fields
