"""`POST /f/{key}/{template_id}`: a plain HTML form (or a page's `fetch()`) posts here
(CONTRACT §8). The key in the path gives the organisation and must have the `submit` scope:
it is meant to be in a web page. The fields become the submission's `data`; fields whose
names start with `_` steer the answer and are not stored:

- `_redirect`: where to send the browser afterwards (303), when that URL's origin is one of
  the key's `allowed_origins`; otherwise the answer is a short thank-you page;
- `_gotcha`: a honeypot; a form that fills it in gets the same answer, and nothing is stored.

A client that accepts only JSON gets the `POST /submit` answer (202)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import UploadFile

from services.api.access import from_allowed_origin, needs
from services.api.deps import Database, IdempotencyKey
from services.api.keys import KeyRing, Principal
from services.api.pages.render import page
from services.api.routes.submissions import accepted_response
from services.api.schemas.documents import check_document
from workflow_core.adapters.ratelimit import SubmitRate
from workflow_core.errors import Forbidden, Unprocessable
from workflow_core.persistence.submissions import Accepted, NewSubmission

router = APIRouter(tags=["forms"])

MAX_FIELDS = 1000
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_FIELD_SCHEMA = {
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "_redirect": {"type": "string", "description": "where to go afterwards (303)"},
        "_gotcha": {"type": "string", "description": "honeypot: leave empty"},
    },
}
_EXAMPLE = {
    "name": "Ada",
    "email": "ada@example.com",
    "_redirect": "https://www.example.com/thanks",
}
_BODY = {
    "required": True,
    "content": {
        media: {"schema": _FIELD_SCHEMA, "example": _EXAMPLE}
        for media in (*_FORM_TYPES, "application/json")
    },
}


_UNKNOWN_KEY_TEXT = (
    "unknown key: the form's URL needs an organisation's key with the `submit` scope"
)
_UNKNOWN_KEY = orjson.dumps({"detail": _UNKNOWN_KEY_TEXT})


@router.post(
    "/f/{key}/{template_id}",
    response_class=Response,
    summary="Post a plain HTML form",
    openapi_extra={"requestBody": _BODY},
    responses={
        200: {"content": {"text/html": {}}, "description": "the thank-you page"},
        202: {"description": "stored (a client that accepts only JSON)"},
        303: {"description": "stored; on to `_redirect`"},
        401: {"description": "no such key"},
        403: {"description": "the key lacks the `submit` scope, or the page's origin is not "
              "one of its `allowed_origins`"},
        422: {"description": "a file part, a body that is not a form, or a value PostgreSQL "
              "cannot hold"},
        429: {"description": "over SUBMIT_RATE_PER_ORG; nothing was stored"},
    },
)  # fmt: skip
async def post_form(
    key: Annotated[str, Path(max_length=200)],
    template_id: Annotated[str, Path(min_length=1, max_length=500)],
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Store a form posted by a web page: the fields become `data` (a repeated name becomes
    a list), the key gives the organisation."""
    try:
        return await _take(request, key, template_id, idempotency_key)
    except (Forbidden, Unprocessable) as refused:
        if not _wants_html(request.headers.get("accept", "")):
            raise  # JSON, as from every other route
        status, heading = (
            (403, "Not accepted") if isinstance(refused, Forbidden) else (422, "Not sent")
        )
        message = refused.reason if isinstance(refused, Unprocessable) else str(refused)
        return page("problem.html", status, heading=heading, message=message)


async def _take(
    request: Request, key: str, template_id: str, idempotency_key: str | None
) -> Response:
    principal = await _form_key(request, key)
    if principal is None:
        if _wants_html(request.headers.get("accept", "")):
            return page("problem.html", 401, heading="Not accepted", message=_UNKNOWN_KEY_TEXT)
        return Response(_UNKNOWN_KEY, status_code=401, media_type="application/json")
    from_allowed_origin(principal, request.headers.get("origin"))
    fields = await _fields(request)
    check = {name: value for name, value in fields.items() if not name.startswith("_")}
    try:
        data = check_document(check)
    except ValueError as error:
        raise Unprocessable("data", str(error)) from None
    redirect = _redirect(fields.get("_redirect"), principal)
    if _text(fields.get("_gotcha")):  # a bot: the answer it expects, and nothing stored
        return _answer(request, None, redirect)
    assert principal.org_id is not None  # _form_key refuses the operator
    submit_rate: SubmitRate = request.app.state.submit_rate
    await submit_rate.check(principal.org_id)
    database: Database = request.app.state.database
    accepted = await database.store_submission(
        NewSubmission(template_id, principal.org_id, data, datetime.now(UTC), idempotency_key)
    )
    return _answer(request, accepted, redirect)


async def _form_key(request: Request, key: str) -> Principal | None:
    """The key's caller; None for a key that stands for nobody."""
    ring: KeyRing = request.app.state.key_ring
    principal = await ring.principal(key) if key else None
    if principal is None:
        return None
    if principal.operator:
        raise Forbidden("the form endpoint takes an organisation's key with the `submit` scope")
    needs(principal, "submit")
    return principal


async def _fields(request: Request) -> dict[str, Any]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in _FORM_TYPES:
        return await _form_fields(request)
    if media == "application/json" or media.endswith("+json"):
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as error:
            raise Unprocessable("body", f"the body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise Unprocessable("body", "a JSON body must be an object of fields")
        return body
    raise Unprocessable(
        "body",
        f"the body must be a form (application/x-www-form-urlencoded or multipart/form-data) "
        f"or a JSON object, not {media or 'untyped'}",
    )


async def _form_fields(request: Request) -> dict[str, Any]:
    async with request.form(max_files=MAX_FIELDS, max_fields=MAX_FIELDS) as form:
        fields: dict[str, Any] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                raise Unprocessable(
                    name,
                    f"field {name!r} is a file ({value.filename!r}): this endpoint takes form "
                    "fields only; upload files elsewhere and post their links",
                )
            if name in fields:  # a repeated name (checkboxes, a multiple select): a list
                held = fields[name]
                fields[name] = [*held, value] if isinstance(held, list) else [held, value]
            else:
                fields[name] = value
        return fields


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return value.strip() if isinstance(value, str) else ""


def _redirect(value: Any, principal: Principal) -> str | None:
    """`_redirect` when it is an http(s) URL on one of the key's own origins (a `*` does not
    count: the endpoint must not send browsers anywhere a form says)."""
    url = _text(value)
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return None
    return url if f"{parts.scheme}://{parts.netloc}" in principal.allowed_origins else None


def _wants_html(accept: str) -> bool:
    """A browser navigating (a plain form): its refusals are pages too."""
    return "text/html" in accept.lower()


def _only_json(accept: str) -> bool:
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    takes_json = any(kind == "application/json" or kind.endswith("+json") for kind in types)
    return takes_json and not types & {"text/html", "*/*", "text/*"}


def _answer(request: Request, accepted: Accepted | None, redirect: str | None) -> Response:
    """`accepted` None: a honeypot's answer, which must look like any other."""
    if redirect is not None:
        return RedirectResponse(redirect, status_code=303)
    if not _only_json(request.headers.get("accept", "")):
        return page("thank_you.html")
    if accepted is not None:
        return accepted_response(accepted)
    made_up = {"submission_id": uuid.uuid4(), "event_id": uuid.uuid4(), "status": "accepted"}
    return Response(orjson.dumps(made_up), status_code=202, media_type="application/json")
