"""Workflows and their versions. Every change stores a new version; runs keep the version they
started with; deleting deactivates (no new runs, history kept)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, tuple_, update

from workflow_core.ids import new_id
from workflow_core.persistence import schedules, sql
from workflow_core.persistence.pool import Executor
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
    key: str | None = None
    """What names it in a file (`workflows apply`); unique per organisation."""


_COLUMNS = (
    workflows.c.id,
    workflow_versions.c.name,
    workflows.c.org_id,
    workflows.c.active,
    workflow_versions.c.version,
    workflow_versions.c.definition,
    workflows.c.created_at,
    workflows.c.updated_at,
    workflows.c.key,
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
    db: Executor,
    *,
    name: str,
    org_id: str | None,
    definition: dict[str, Any],
    key: str | None = None,
) -> WorkflowRecord:
    """A new workflow at version 1 (with its schedule when its trigger is one)."""
    workflow_id = new_id()
    await sql.execute(
        db,
        workflows.insert().values(
            id=workflow_id, name=name, org_id=org_id, current_version=1, key=key
        ),
    )
    await sql.execute(
        db,
        workflow_versions.insert().values(
            workflow_id=workflow_id, version=1, name=name, definition=definition
        ),
    )
    await schedules.sync(db, workflow_id, 1, org_id, definition)
    record = await get(db, workflow_id)
    assert record is not None
    return record


async def count_active_of(db: Executor, org_id: str | None) -> int:
    """The organisation's active workflows (those without one when `org_id` is None), counted
    under a lock on the organisation held until the transaction ends: a caller that checks a
    limit and then creates one cannot be overtaken by a concurrent creation."""
    await sql.fetchval(
        db,
        select(
            func.pg_advisory_xact_lock(
                func.hashtextextended(f"flowline.workflows:{org_id or ''}", 0)
            )
        ),
    )
    owner = workflows.c.org_id.is_(None) if org_id is None else workflows.c.org_id == org_id
    count = await sql.fetchval(
        db,
        select(func.count()).select_from(workflows).where(workflows.c.active.is_(True), owner),
    )
    return int(count)


async def get(db: Executor, workflow_id: UUID) -> WorkflowRecord | None:
    row = await sql.fetchrow(db, _current().where(workflows.c.id == workflow_id))
    return _record(row) if row else None


async def get_version(db: Executor, workflow_id: UUID, version: int) -> WorkflowRecord | None:
    query = (
        select(*_COLUMNS)
        .join(workflows, workflows.c.id == workflow_versions.c.workflow_id)
        .where(
            workflow_versions.c.workflow_id == workflow_id, workflow_versions.c.version == version
        )
    )
    row = await sql.fetchrow(db, query)
    return _record(row) if row else None


async def list_versions(db: Executor, workflow_id: UUID) -> list[dict[str, Any]]:
    query = (
        select(
            workflow_versions.c.version, workflow_versions.c.name, workflow_versions.c.created_at
        )
        .where(workflow_versions.c.workflow_id == workflow_id)
        .order_by(workflow_versions.c.version)
    )
    return [dict(row) for row in await sql.fetch(db, query)]


async def list_workflows(
    db: Executor,
    *,
    org_id: str | None = None,
    with_every_organisation: bool = False,
    active: bool | None = True,
    limit: int = 100,
    offset: int = 0,
) -> list[WorkflowRecord]:
    """Workflows of `org_id` (all when None), with those of every organisation when
    `with_every_organisation`; `active` picks the active or the deactivated ones (None: both)."""
    query = _current()
    if active is not None:
        query = query.where(workflows.c.active.is_(active))
    if org_id is not None:
        mine = workflows.c.org_id == org_id
        query = query.where(
            mine | workflows.c.org_id.is_(None) if with_every_organisation else mine
        )
    query = (
        query.order_by(workflows.c.created_at.desc(), workflows.c.id).limit(limit).offset(offset)
    )
    return [_record(row) for row in await sql.fetch(db, query)]


async def add_version(
    db: Executor, workflow_id: UUID, *, name: str, definition: dict[str, Any]
) -> WorkflowRecord | None:
    """Store a new version and make it current; None when the workflow does not exist."""
    version = await sql.fetchval(
        db,
        update(workflows)
        .where(workflows.c.id == workflow_id)
        .values(current_version=workflows.c.current_version + 1, name=name, updated_at=func.now())
        .returning(workflows.c.current_version),
    )
    if version is None:
        return None
    await sql.execute(
        db,
        workflow_versions.insert().values(
            workflow_id=workflow_id, version=version, name=name, definition=definition
        ),
    )
    record = await get(db, workflow_id)
    if record is not None and record.active:
        await schedules.sync(db, workflow_id, version, record.org_id, definition)
    return record


async def deactivate(db: Executor, workflow_id: UUID) -> bool:
    touched = await sql.execute(
        db,
        update(workflows)
        .where(workflows.c.id == workflow_id)
        .values(active=False, updated_at=func.now()),
    )
    await schedules.drop(db, workflow_id)
    return touched > 0


async def activate(db: Executor, workflow_id: UUID) -> bool:
    """Active again; a schedule fires next at its first tick from now (the ticks while it was
    inactive never fire)."""
    touched = await sql.execute(
        db,
        update(workflows)
        .where(workflows.c.id == workflow_id)
        .values(active=True, updated_at=func.now()),
    )
    record = await get(db, workflow_id)
    if record is not None:
        await schedules.sync(db, workflow_id, record.version, record.org_id, record.definition)
    return touched > 0


async def set_key(db: Executor, workflow_id: UUID, key: str) -> None:
    await sql.execute(db, update(workflows).where(workflows.c.id == workflow_id).values(key=key))


async def by_key(db: Executor, org_id: str | None, key: str) -> WorkflowRecord | None:
    """The workflow of this organisation (None: of every organisation) named `key`."""
    owner = workflows.c.org_id.is_(None) if org_id is None else workflows.c.org_id == org_id
    row = await sql.fetchrow(db, _current().where(owner, workflows.c.key == key))
    return _record(row) if row else None


@dataclass(frozen=True, slots=True)
class Head:
    """An active workflow at its current version, without its definition."""

    id: UUID
    version: int
    org_id: str | None


async def active_heads(db: Executor) -> list[Head]:
    """Every active workflow's id, current version and organisation: what the worker's catalog
    compares with what it has parsed already."""
    query = select(workflows.c.id, workflows.c.current_version, workflows.c.org_id).where(
        workflows.c.active.is_(True)
    )
    return [Head(*row) for row in await sql.fetch(db, query)]


async def versions(db: Executor, wanted: list[tuple[UUID, int]]) -> list[WorkflowRecord]:
    """These (workflow id, version) pairs, those that exist."""
    if not wanted:
        return []
    query = (
        select(*_COLUMNS)
        .join(workflows, workflows.c.id == workflow_versions.c.workflow_id)
        .where(tuple_(workflow_versions.c.workflow_id, workflow_versions.c.version).in_(wanted))
    )
    return [_record(row) for row in await sql.fetch(db, query)]


async def active(db: Executor) -> list[WorkflowRecord]:
    """Every active workflow at its current version: what the worker matches events against."""
    rows = await sql.fetch(db, _current().where(workflows.c.active.is_(True)))
    return [_record(row) for row in rows]
