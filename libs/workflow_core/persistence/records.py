"""Tickets and to-do tasks as the actions create and update them (the `Records` door of
actions/base.py). Ids are derived from the action's idempotency key, so a repeated create
finds the record it made the first time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from workflow_core.actions.base import ActionCall
from workflow_core.errors import PermanentActionError
from workflow_core.persistence.db import translate_errors
from workflow_core.persistence.tables import tasks, tickets


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    """A record as JSON-ready values (what lands in the run's context)."""
    return {
        key: (
            str(value)
            if isinstance(value, UUID)
            else value.isoformat()
            if hasattr(value, "isoformat")
            else value
        )
        for key, value in row.items()
    }


class DbRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _create(
        self, table: Table, record_id: UUID, values: Mapping[str, Any]
    ) -> dict[str, Any]:
        async with translate_errors(), self._engine.begin() as conn:
            await conn.execute(
                insert(table).values(id=record_id, **values).on_conflict_do_nothing()
            )
            row = (await conn.execute(select(table).where(table.c.id == record_id))).one()
        return public(dict(row._mapping))

    async def _update(
        self, table: Table, kind: str, record_id: UUID, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        async with translate_errors(), self._engine.begin() as conn:
            row = (
                await conn.execute(
                    update(table)
                    .where(table.c.id == record_id)
                    .values(**changes, updated_at=func.now())
                    .returning(*table.c)
                )
            ).first()
        if row is None:
            raise PermanentActionError(f"no {kind} with id {record_id}")
        return public(dict(row._mapping))

    async def create_ticket(
        self, ticket_id: UUID, call: ActionCall, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._create(
            tickets,
            ticket_id,
            {
                "run_id": call.run_id,
                "workflow_id": call.workflow_id,
                "submission_id": call.submission_id,
                "org_id": call.org_id,
                **fields,
            },
        )

    async def update_ticket(self, ticket_id: UUID, changes: Mapping[str, Any]) -> dict[str, Any]:
        return await self._update(tickets, "ticket", ticket_id, changes)

    async def create_task(
        self, task_id: UUID, call: ActionCall, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._create(
            tasks,
            task_id,
            {
                "kind": "todo",
                "run_id": call.run_id,
                "workflow_id": call.workflow_id,
                "step_id": call.step_id,
                "step_seq": call.step_seq,
                "submission_id": call.submission_id,
                "org_id": call.org_id,
                **fields,
            },
        )

    async def update_task(self, task_id: UUID, changes: Mapping[str, Any]) -> dict[str, Any]:
        return await self._update(tasks, "task", task_id, changes)
