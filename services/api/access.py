"""What the caller may see and do (CONTRACT §7), for the routes. auth.py put the caller's
`Principal` on the request; these checks turn it into answers: another organisation's object
is a 404 exactly as if it did not exist, an `org_id` other than the key's is a 403, and so is a
key without the scope a route needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.api.keys import Principal
from workflow_core.errors import Forbidden, NotFound, Unprocessable


def caller(request: Request) -> Principal:
    principal = request.state.principal
    assert isinstance(principal, Principal), "the Authenticate middleware runs first"
    return principal


async def _caller(request: Request) -> Principal:
    return caller(request)


Caller = Annotated[Principal, Depends(_caller)]


def needs(principal: Principal, scope: str) -> None:
    if not principal.can(scope):
        held = ", ".join(sorted(principal.scopes)) or "none"
        raise Forbidden(f"this key may not do this: it needs the `{scope}` scope (it has {held})")


def operator_only(principal: Principal, what: str) -> None:
    if not principal.operator:
        raise Forbidden(f"only the operator's key (API_ADMIN_KEY) may {what}")


def must_see(principal: Principal, org_id: str | None, missing: str) -> None:
    """404 with `missing` when the object belongs to another organisation."""
    if not principal.sees(org_id):
        raise NotFound(missing)


def acting_for(principal: Principal, asked: str | None) -> str | None:
    """The organisation a request acts for: the key's own (an `org_id` other than it is a
    403; none given means the key's); the operator's key acts for the one it names."""
    if principal.operator:
        return asked
    if asked is not None and asked != principal.org_id:
        raise Forbidden(f"this key belongs to organisation {principal.org_id!r}, not {asked!r}")
    return principal.org_id


def organisation_of(principal: Principal, asked: str | None) -> str:
    """The organisation something is stored for (a submission, an event): as `acting_for`,
    and the operator's key, which belongs to none, must name one (422)."""
    org_id = acting_for(principal, asked)
    if org_id is None:
        raise Unprocessable("org_id", "the operator's key must name the organisation")
    return org_id


def from_allowed_origin(principal: Principal, origin: str | None) -> None:
    """A key that names its web origins is refused from any other (CONTRACT §8). A request
    without an Origin is not from a browser page, and the key's text is what it proves."""
    allowed = principal.allowed_origins
    if allowed and origin is not None and origin not in allowed and "*" not in allowed:
        raise Forbidden(f"this key may not be used from the web origin {origin!r}")
