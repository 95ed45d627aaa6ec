"""Tickets and tasks.

`DbRecords` is the `Records` door of actions/base.py: the actions create and update tickets
and to-do tasks through it. Ids are derived from the action's idempotency key, so a repeated
create finds the record it made the first time; an update merges `fields` in its one UPDATE
statement, so concurrent updates never lose each other's keys.

The functions below it are what the HTTP API reads and does, each in the caller's transaction:
list and get tickets and tasks, and complete a task (a human task's run is woken through the
outbox, in the same transaction).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Select, Table, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert

from workflow_core import events, tracing
from workflow_core.actions.base import ActionCall
from workflow_core.errors import Conflict, NotFound, PermanentActionError, Unprocessable
from workflow_core.ids import new_id
from workflow_core.persistence import outbox, runs, sql
from workflow_core.persistence.pool import Connection, Executor, Pool, translate_errors
from workflow_core.persistence.tables import tasks, tickets
from workflow_core.statuses import TaskKind, TaskStatus


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    """A record as JSON-ready values (what lands in the run's context)."""
    return {
        str(key): (
            str(value)
            if isinstance(value, UUID)
            else value.isoformat()
            if hasattr(value, "isoformat")
            else value
        )
        for key, value in row.items()
    }


class DbRecords:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def _create(
        self, table: Table, record_id: UUID, values: Mapping[str, Any]
    ) -> dict[str, Any]:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            await sql.execute(
                conn, insert(table).values(id=record_id, **values).on_conflict_do_nothing()
            )
            row = await sql.fetchrow(conn, select(table).where(table.c.id == record_id))
        assert row is not None
        return public(dict(row))

    async def _update(
        self,
        table: Table,
        kind: str,
        record_id: UUID,
        changes: Mapping[str, Any],
        org_id: str | None,
        *,
        only: ColumnElement[bool] | None = None,
        refused: str = "",
    ) -> dict[str, Any]:
        """Apply `changes` to the record of organisation `org_id`, its `fields` merged into the
        stored ones, when it matches `only` (else PermanentActionError with `refused`). A record
        of another organisation is reported as not found: a run never learns it exists."""
        values: dict[str, Any] = {**changes, "updated_at": func.now()}
        if changes.get("fields") is not None:
            values["fields"] = merged_fields(table, changes["fields"])
        same_org = table.c.org_id.is_not_distinct_from(org_id)
        query = (
            update(table)
            .where(table.c.id == record_id, same_org)
            .values(values)
            .returning(*table.c)
        )
        if only is not None:
            query = query.where(only)
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            row = await sql.fetchrow(conn, query)
            if row is None:
                mine = select(table.c.id).where(table.c.id == record_id, same_org)
                if await sql.fetchrow(conn, mine) is None:
                    whose = f" in organisation {org_id!r}" if org_id is not None else ""
                    raise PermanentActionError(f"no {kind} with id {record_id}{whose}")
                raise PermanentActionError(refused)
        return public(dict(row))

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

    async def update_ticket(
        self, ticket_id: UUID, org_id: str | None, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._update(tickets, "ticket", ticket_id, changes, org_id)

    async def create_task(
        self, task_id: UUID, call: ActionCall, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._create(
            tasks,
            task_id,
            {
                "kind": TaskKind.TODO,
                "run_id": call.run_id,
                "workflow_id": call.workflow_id,
                "step_id": call.step_id,
                "step_seq": call.step_seq,
                "submission_id": call.submission_id,
                "org_id": call.org_id,
                "status": TaskStatus.PENDING,
                **fields,
            },
        )

    async def update_task(
        self, task_id: UUID, org_id: str | None, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a to-do task. A human task is refused: only its completion (through the API)
        may settle it, since that is what wakes its run."""
        values = dict(changes)
        if "status" in values:
            values["completed_at"] = (
                func.coalesce(tasks.c.completed_at, func.now())
                if values["status"] == TaskStatus.COMPLETED
                else None
            )
        return await self._update(
            tasks,
            "task",
            task_id,
            values,
            org_id,
            only=tasks.c.kind == TaskKind.TODO,
            refused=f"task {task_id} is a human task: only its completion "
            f"(POST /tasks/{task_id}/complete) settles it and wakes its run",
        )


def merged_fields(table: Table, fields: Mapping[str, Any]) -> ColumnElement[Any]:
    """The stored `fields` with these keys added or replaced (JSONB `||`: top-level keys)."""
    stored = func.coalesce(table.c.fields, literal({}, JSONB))
    return stored.op("||", return_type=JSONB)(literal(dict(fields), JSONB))


# -- what the HTTP API reads and does ---------------------------------------------------------


def _listing(table: Table, wanted: Mapping[str, object], limit: int, offset: int) -> Select[Any]:
    """The records whose columns equal the `wanted` values that are not None, newest first;
    the id breaks ties so that pages neither repeat nor skip a record."""
    query = select(table)
    for name, value in wanted.items():
        if value is not None:
            query = query.where(table.c[name] == value)
    return query.order_by(table.c.created_at.desc(), table.c.id).limit(limit).offset(offset)


async def list_tickets(
    db: Executor,
    *,
    org_id: str | None = None,
    status: str | None = None,
    run_id: UUID | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    wanted = {"org_id": org_id, "status": status, "run_id": run_id}
    return [dict(row) for row in await sql.fetch(db, _listing(tickets, wanted, limit, offset))]


async def get_ticket(db: Executor, ticket_id: UUID) -> dict[str, Any] | None:
    return sql.mapping(await sql.fetchrow(db, select(tickets).where(tickets.c.id == ticket_id)))


async def list_tasks(
    db: Executor,
    *,
    status: str | None = None,
    assignee: str | None = None,
    org_id: str | None = None,
    kind: str | None = None,
    run_id: UUID | None = None,
    due_before: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """`due_before`: only the tasks due before that time (overdue ones, given now)."""
    wanted = {
        "status": status,
        "assignee": assignee,
        "org_id": org_id,
        "kind": kind,
        "run_id": run_id,
    }
    query = _listing(tasks, wanted, limit, offset)
    if due_before is not None:
        query = query.where(tasks.c.due_at < due_before)
    return [dict(row) for row in await sql.fetch(db, query)]


async def get_task(db: Executor, task_id: UUID) -> dict[str, Any] | None:
    return sql.mapping(await sql.fetchrow(db, select(tasks).where(tasks.c.id == task_id)))


async def complete_task(
    conn: Connection,
    task_id: UUID,
    *,
    outcome: str | None = None,
    data: Mapping[str, Any] | None = None,
    completed_by: str | None = None,
) -> dict[str, Any]:
    """Complete a pending task in the caller's transaction; for a human task, also add the
    `run.resume` event that wakes its run. NotFound for an unknown id; Conflict when the task
    is no longer pending or its run can no longer be woken.

    The run is locked before the task is changed, in the order the worker's checkpoint takes
    them, so a completion and the worker never wait on each other in a cycle."""
    task = await get_task(conn, task_id)
    if task is None:
        raise NotFound(f"no task with id {task_id}")
    if task["status"] != TaskStatus.PENDING:
        raise Conflict(_settled(task))
    _check_outcome(task, outcome)
    if task["kind"] == TaskKind.HUMAN:
        await _check_run_can_resume(conn, task)
    row = await sql.fetchrow(
        conn,
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.PENDING)
        .values(
            status=TaskStatus.COMPLETED,
            outcome=outcome,
            data=dict(data) if data is not None else None,
            completed_by=completed_by,
            completed_at=func.now(),
            updated_at=func.now(),
        )
        .returning(*tasks.c),
    )
    if row is None:  # settled by someone else since it was read
        settled = await get_task(conn, task_id)
        raise Conflict(_settled(settled) if settled else f"no task with id {task_id}")
    completed = dict(row)
    if completed["kind"] == TaskKind.HUMAN:
        event = events.run_resume(
            new_id(),
            completed["run_id"],
            "task",
            task_id=str(task_id),
            step_seq=completed["step_seq"],
            **tracing.carried(),  # the run goes on in the trace of the request that completed it
        )
        await outbox.add(conn, event, submission_id=completed["submission_id"])
    return completed


def _check_outcome(task: Mapping[str, Any], outcome: str | None) -> None:
    """A task that lists its outcomes takes one of them, and nothing else."""
    allowed = (task["fields"] or {}).get("outcomes")
    if allowed and outcome not in allowed:
        raise Unprocessable(
            "outcome",
            f"task {task['id']} takes one of the outcomes {', '.join(map(repr, allowed))}, "
            f"not {outcome!r}",
        )


def _settled(task: Mapping[str, Any]) -> str:
    status = str(task["status"]).replace("_", " ")
    at = task["completed_at"] or task["updated_at"]
    return f"task {task['id']} is already {status} (at {at.isoformat()})"


async def _check_run_can_resume(conn: Connection, task: Mapping[str, Any]) -> None:
    if task["run_id"] is None:
        raise Conflict(f"task {task['id']} cannot be completed: it belongs to no run")
    run = await runs.get(conn, task["run_id"], for_update=True)
    if run is None:
        raise Conflict(f"task {task['id']} cannot be completed: its run {task['run_id']} is gone")
    if run.finished:
        reason = f": {run.error}" if run.error else ""
        raise Conflict(
            f"task {task['id']} cannot be completed: its run {run.id} is {run.status}{reason}"
        )
