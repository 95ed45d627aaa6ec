"""An organisation's API keys. Only a keyed hash of each key is stored (services/api/keys.py
makes and hashes them); the key's text is shown once, in the answer that made it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, insert, select, update

from workflow_core.ids import new_id
from workflow_core.persistence import sql
from workflow_core.persistence.pool import Executor
from workflow_core.persistence.tables import api_keys


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: UUID
    org_id: str
    name: str | None
    scopes: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


_SHOWN = [c for c in api_keys.c if c.name != "digest"]


def _key(row: Any) -> ApiKey:
    values = dict(row)
    values["scopes"] = tuple(values["scopes"])
    values["allowed_origins"] = tuple(values["allowed_origins"])
    return ApiKey(**values)


async def create(
    db: Executor,
    *,
    org_id: str,
    scopes: Sequence[str],
    name: str | None,
    allowed_origins: Sequence[str],
    prefix: str,
    digest: bytes,
) -> ApiKey:
    row = await sql.fetchrow(
        db,
        insert(api_keys)
        .values(
            id=new_id(),
            org_id=org_id,
            name=name,
            scopes=list(scopes),
            allowed_origins=list(allowed_origins),
            prefix=prefix,
            digest=digest,
        )
        .returning(*_SHOWN),
    )
    assert row is not None
    return _key(row)


async def by_digest(db: Executor, digest: bytes) -> ApiKey | None:
    """The key with this hash, unless revoked."""
    query = select(*_SHOWN).where(api_keys.c.digest == digest, api_keys.c.revoked_at.is_(None))
    row = await sql.fetchrow(db, query)
    return _key(row) if row else None


async def listing(db: Executor, *, org_id: str | None, limit: int, offset: int) -> list[ApiKey]:
    """Keys newest first, revoked ones included (they say when)."""
    query = select(*_SHOWN)
    if org_id is not None:
        query = query.where(api_keys.c.org_id == org_id)
    query = query.order_by(api_keys.c.created_at.desc(), api_keys.c.id).limit(limit).offset(offset)
    return [_key(row) for row in await sql.fetch(db, query)]


async def revoke(db: Executor, key_id: UUID) -> bool:
    """True when the key existed and was not revoked yet."""
    touched = await sql.execute(
        db,
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=func.now()),
    )
    return touched > 0


async def get(db: Executor, key_id: UUID) -> ApiKey | None:
    row = await sql.fetchrow(db, select(*_SHOWN).where(api_keys.c.id == key_id))
    return _key(row) if row else None
