"""Workflows and their versions. Every change stores a new version; runs keep the version they
started with; deleting deactivates (no new runs, history kept)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from workflow_core.ids import new_id
from workflow_core.persistence.tables import workflow_versions, workflows


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    id: UUID
    name: str
    org_id: str | None
    active: bool
    version: int
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime


_COLUMNS = (
    workflows.c.id,
    workflow_versions.c.name,
    workflows.c.org_id,
    workflows.c.active,
    workflow_versions.c.version,
    workflow_versions.c.definition,
    workflows.c.created_at,
    workflows.c.updated_at,
)


def _current() -> Any:
    return select(*_COLUMNS).join(
        workflow_versions,
        (workflow_versions.c.workflow_id == workflows.c.id)
        & (workflow_versions.c.version == workflows.c.current_version),
    )


def _record(row: Any) -> WorkflowRecord:
    return WorkflowRecord(*row)


async def create(
    conn: AsyncConnection, *, name: str, org_id: str | None, definition: dict[str, Any]
) -> WorkflowRecord:
    workflow_id = new_id()
    await conn.execute(
        workflows.insert().values(id=workflow_id, name=name, org_id=org_id, current_version=1)
    )
    await conn.execute(
        workflow_versions.insert().values(
            workflow_id=workflow_id, version=1, name=name, definition=definition
        )
    )
    record = await get(conn, workflow_id)
    assert record is not None
    return record


async def get(conn: AsyncConnection, workflow_id: UUID) -> WorkflowRecord | None:
    row = (await conn.execute(_current().where(workflows.c.id == workflow_id))).first()
    return _record(row) if row else None


async def get_version(
    conn: AsyncConnection, workflow_id: UUID, version: int
) -> WorkflowRecord | None:
    query = (
        select(*_COLUMNS)
        .join(workflows, workflows.c.id == workflow_versions.c.workflow_id)
        .where(
            workflow_versions.c.workflow_id == workflow_id, workflow_versions.c.version == version
        )
    )
    row = (await conn.execute(query)).first()
    return _record(row) if row else None


async def list_versions(conn: AsyncConnection, workflow_id: UUID) -> list[dict[str, Any]]:
    query = (
        select(
            workflow_versions.c.version, workflow_versions.c.name, workflow_versions.c.created_at
        )
        .where(workflow_versions.c.workflow_id == workflow_id)
        .order_by(workflow_versions.c.version)
    )
    return [dict(row._mapping) for row in await conn.execute(query)]


async def list_workflows(
    conn: AsyncConnection,
    *,
    org_id: str | None = None,
    include_inactive: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> list[WorkflowRecord]:
    query = _current()
    if not include_inactive:
        query = query.where(workflows.c.active.is_(True))
    if org_id is not None:
        query = query.where(workflows.c.org_id == org_id)
    query = (
        query.order_by(workflows.c.created_at.desc(), workflows.c.id).limit(limit).offset(offset)
    )
    return [_record(row) for row in await conn.execute(query)]


async def add_version(
    conn: AsyncConnection, workflow_id: UUID, *, name: str, definition: dict[str, Any]
) -> WorkflowRecord | None:
    """Store a new version and make it current; None when the workflow does not exist."""
    version = (
        await conn.execute(
            update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(
                current_version=workflows.c.current_version + 1, name=name, updated_at=func.now()
            )
            .returning(workflows.c.current_version)
        )
    ).scalar()
    if version is None:
        return None
    await conn.execute(
        workflow_versions.insert().values(
            workflow_id=workflow_id, version=version, name=name, definition=definition
        )
    )
    return await get(conn, workflow_id)


async def deactivate(conn: AsyncConnection, workflow_id: UUID) -> bool:
    result = await conn.execute(
        update(workflows)
        .where(workflows.c.id == workflow_id)
        .values(active=False, updated_at=func.now())
        .returning(workflows.c.id)
    )
    return result.first() is not None


async def active(conn: AsyncConnection) -> list[WorkflowRecord]:
    """Every active workflow at its current version: what the worker matches events against."""
    return [
        _record(row) for row in await conn.execute(_current().where(workflows.c.active.is_(True)))
    ]
