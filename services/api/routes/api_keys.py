"""API keys of the organisations (CONTRACT §7): made, listed and revoked with the operator's
key only. A key's text is in the answer that made it, and nowhere else ever again."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, Response

from services.api import keys
from services.api.access import Caller, operator_only
from services.api.deps import Db, Filter, Limit, Offset
from services.api.schemas.keys import ApiKeyCreate, ApiKeyMade, ApiKeyOut
from workflow_core.errors import NotFound
from workflow_core.persistence import api_keys
from workflow_core.persistence.api_keys import ApiKey

router = APIRouter(prefix="/api-keys", tags=["api keys"])


def shown(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "org_id": key.org_id,
        "name": key.name,
        "scopes": list(key.scopes),
        "allowed_origins": list(key.allowed_origins),
        "prefix": key.prefix,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


@router.post("", status_code=201, response_model=ApiKeyMade)
async def create_key(body: ApiKeyCreate, db: Db, principal: Caller) -> dict[str, Any]:
    """A new key for an organisation. Its text (`key`) is in this answer only: it is stored
    as a hash."""
    operator_only(principal, "make API keys")
    text = keys.new_key()
    async with db.transaction() as conn:
        made = await api_keys.create(
            conn,
            org_id=body.org_id,
            scopes=sorted(set(body.scopes)),
            name=body.name,
            allowed_origins=body.allowed_origins,
            prefix=keys.shown_prefix(text),
            digest=keys.digest(text),
        )
    return {**shown(made), "key": text}


@router.get("", response_model=list[ApiKeyOut])
async def list_keys(
    db: Db, principal: Caller, org_id: Filter = None, limit: Limit = 100, offset: Offset = 0
) -> list[dict[str, Any]]:
    """Keys, newest first (revoked ones too), without their text."""
    operator_only(principal, "list API keys")
    async with db.reading() as conn:
        found = await api_keys.listing(conn, org_id=org_id, limit=limit, offset=offset)
    return [shown(key) for key in found]


@router.delete("/{key_id}", status_code=204, responses={404: {"description": "no such key"}})
async def revoke_key(key_id: UUID, db: Db, principal: Caller, request: Request) -> Response:
    """Revoke a key: from now on it gets 401, on every API process within a second."""
    operator_only(principal, "revoke API keys")
    async with db.transaction() as conn:
        revoked = await api_keys.revoke(conn, key_id)
        if not revoked and await api_keys.get(conn, key_id) is None:
            raise NotFound(f"no API key with id {key_id}")
    await request.app.state.key_ring.revoked(key_id)
    return Response(status_code=204)
