"""A run's checkpoint: one statement holding the run's new state and everything its journal
says happened since the last one (steps entered and left, action attempts, effects done, tasks
and timers created, event waits begun, events to publish, events taken). Concurrent runs share
it: it takes lists.

The statement is built once from the schema in tables.py: every journal part is a CTE reading
its rows from a JSON parameter with the table's own columns and types, so the SQL never lists
columns by hand and has one shape whatever the journal holds.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Table

from workflow_core.persistence import sql
from workflow_core.persistence.journal import Journal
from workflow_core.persistence.pool import Executor, json_text
from workflow_core.persistence.runs import RunRecord, StaleRun
from workflow_core.persistence.tables import (
    effects,
    event_waits,
    outbox,
    run_actions,
    run_steps,
    runs,
    tasks,
)
from workflow_core.persistence.tables import timers as timers_table


def _due(absolute: str, seconds: str) -> str:
    """A due time: `absolute`, else `seconds` from now by the database's clock (else NULL)."""
    return f"COALESCE({absolute}, now() + make_interval(secs => {seconds}))"


@dataclass(frozen=True, slots=True)
class _Part:
    """One kind of journal row and the CTE that writes it."""

    name: str
    table: Table
    columns: list[str]
    """Written columns; each comes in under its own name unless `values` says otherwise."""
    extra: tuple[str, ...] = ()
    """Incoming fields that are not columns (`name type`)."""
    values: dict[str, str] | None = None
    """What is written to a column, when it is not the incoming field of its name."""
    tail: str = ""
    fact: bool = False
    """True of what happened whoever drives the run (an effect done, an attempt made): written
    even when the run's own move lost a race."""

    def statement(self, parameter: int, *, guarded: bool) -> str:
        incoming = [c for c in self.columns if c not in (self.values or {})]
        spec = ", ".join(["owner uuid", *sql.typed_columns(self.table, incoming), *self.extra])
        selected = ", ".join((self.values or {}).get(c, c) for c in self.columns)
        # Rows name their run (`owner`): unless a fact, written only if that run's move matched.
        guard = " WHERE x.owner IN (SELECT id FROM moved)" if guarded and not self.fact else ""
        return (
            f"INSERT INTO {self.table.name} ({', '.join(self.columns)}) SELECT {selected} "
            f"FROM jsonb_to_recordset(${parameter}::jsonb) AS x({spec}){guard} {self.tail}"
        )


def _all_but(table: Table, *left_out: str) -> list[str]:
    return [column.name for column in table.c if column.name not in left_out]


_STEPS = _Part(
    "steps",
    run_steps,
    _all_but(run_steps, "id"),
    tail="ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status, "
    "finished_at = excluded.finished_at, transition_to = excluded.transition_to, "
    "error = excluded.error",
)
_ATTEMPTS = _Part("attempts", run_actions, _all_but(run_actions, "id"), fact=True)
_DONE = _Part(
    "done",
    effects,
    ["key", "run_id", "state", "result"],
    tail="ON CONFLICT (key) DO UPDATE SET state = excluded.state, result = excluded.result, "
    "updated_at = now()",
    fact=True,
)
_TASKS = _Part(
    "opened",
    tasks,
    _all_but(tasks, "outcome", "data", "completed_at", "completed_by", "created_at", "updated_at"),
    extra=("due_in float8",),
    values={"due_at": _due("NULL", "due_in")},
    tail="ON CONFLICT DO NOTHING",
)
_TIMERS = _Part(
    "timed",
    timers_table,
    ["id", "run_id", "kind", "due_at", "payload"],
    extra=("at timestamptz", "delay float8"),
    values={"due_at": _due("at", "delay")},
    tail="ON CONFLICT DO NOTHING",
)
_QUEUED = _Part("queued", outbox, ["event_id", "event_type", "payload"])
_WAITS = _Part(
    "awaited",
    event_waits,
    ["run_id", "step_seq", "org_id", "event_type", "path", "expected", "since"],
    tail="ON CONFLICT DO NOTHING",
)
_PARTS = (_STEPS, _ATTEMPTS, _DONE, _TASKS, _TIMERS, _QUEUED, _WAITS)
_FACTS = (_ATTEMPTS, _DONE, _TIMERS, _STEPS)
_MOVED = ["id", "revision", "status", "current_step_id", "step_seq", "context", "error"]
_MOVED += ["deliveries"]


# Only when a journal cancels visits (a parallel step ended with branches open): their pending
# tasks are cancelled, their unfired timers and open event waits dropped.
_CANCELLING = [
    "cancelled AS (UPDATE tasks SET status = 'cancelled', updated_at = now() "
    "FROM jsonb_to_recordset(${n}::jsonb) AS c(owner uuid, seq int) "
    "WHERE tasks.run_id = c.owner AND tasks.step_seq = c.seq AND tasks.status = 'pending' "
    "AND c.owner IN (SELECT id FROM moved))",
    "unset AS (DELETE FROM timers USING jsonb_to_recordset(${n}::jsonb) AS c(owner uuid, seq int) "
    "WHERE timers.fired_at IS NULL AND timers.run_id = c.owner "
    "AND timers.payload->>'step_seq' = c.seq::text AND c.owner IN (SELECT id FROM moved))",
    "unwaited AS (DELETE FROM event_waits USING jsonb_to_recordset(${n}::jsonb) AS c(owner uuid, "
    "seq int) WHERE event_waits.run_id = c.owner AND event_waits.step_seq = c.seq "
    "AND event_waits.settled_at IS NULL AND c.owner IN (SELECT id FROM moved))",
]


@functools.cache
def _checkpoint_statement(cancelling: bool = False) -> str:
    """Moves the runs (each only if its revision still matches), writes their journals, marks
    the events they handled taken. Prepared once per connection (in each of its two forms)."""
    spec = ", ".join([*sql.typed_columns(runs, _MOVED), "finished boolean"])
    ctes = [
        f"input AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS u({spec}))",
        "moved AS (UPDATE runs SET status = u.status, current_step_id = u.current_step_id, "
        "step_seq = u.step_seq, context = u.context, error = u.error, "
        "deliveries = u.deliveries, revision = runs.revision + 1, updated_at = now(), "
        "owner = $3, finished_at = CASE WHEN u.finished THEN now() END FROM input u "
        # `= ANY` keeps the plan an index lookup however large `runs` grows (a cached generic
        # plan would otherwise hash-join a full scan of it for every batch).
        "WHERE runs.id = ANY($2::uuid[]) AND runs.id = u.id AND runs.revision = u.revision "
        "RETURNING runs.id, runs.revision)",
        *(
            f"{part.name} AS ({part.statement(number, guarded=True)})"
            for number, part in enumerate(_PARTS, 4)
        ),
        f"taken AS (UPDATE outbox SET taken_at = now() "
        f"WHERE event_id = ANY(${4 + len(_PARTS)}::uuid[]) AND taken_at IS NULL)",
    ]
    if cancelling:
        ctes += [cte.replace("{n}", str(5 + len(_PARTS))) for cte in _CANCELLING]
    return f"WITH {', '.join(ctes)} SELECT id, revision FROM moved"


@functools.cache
def _facts_statement() -> str:
    ctes = [
        f"{part.name} AS ({part.statement(number, guarded=False)})"
        for number, part in enumerate(_FACTS, 1)
    ]
    return f"WITH {', '.join(ctes)} SELECT 1"


def _step_rows(journal: Journal) -> list[dict[str, Any]]:
    """One row per step visit: a visit entered and left in one stretch appears once, with
    the time it was entered and the state it was left in."""
    merged: dict[int, dict[str, Any]] = {}
    for row in journal.steps:
        first = merged.get(row["seq"])
        merged[row["seq"]] = {**row, "entered_at": first["entered_at"]} if first else row
    return list(merged.values())


def _attempt_rows(journal: Journal, deliveries: int) -> list[dict[str, Any]]:
    return [{**row, "delivery": row.get("delivery") or deliveries} for row in journal.actions]


def _done_rows(journal: Journal) -> list[dict[str, Any]]:
    return list({row["key"]: row for row in journal.effects_done}.values())


def _owned(run: RunRecord, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "owner": run.id} for row in rows]


def _journal_parts(run: RunRecord, journal: Journal) -> tuple[list[dict[str, Any]], ...]:
    queued = [
        {"event_id": e.event_id, "event_type": e.type, "payload": e.payload} for e in journal.events
    ]
    parts = (
        _step_rows(journal),
        _attempt_rows(journal, run.deliveries),
        _done_rows(journal),
        journal.tasks,
        journal.timers,
        queued,
        journal.waits,
    )
    return tuple(_owned(run, rows) for rows in parts)


def _move(run: RunRecord) -> dict[str, Any]:
    return {**{name: getattr(run, name) for name in _MOVED}, "finished": run.finished}


async def checkpoint_many(
    pg: Executor, items: list[tuple[RunRecord, Journal]], *, owner: str
) -> list[RunRecord | StaleRun]:
    """Write each run's new state with its journal, all in one statement, naming `owner` as
    the worker that drives them. A run someone else wrote since its `revision` was read gets
    `StaleRun`, and of its journal only the facts are written (the effects it performed and
    its attempts); the others come back with their new revision. Journals are cleared."""
    parts = [
        list(itertools.chain.from_iterable(rows))
        for rows in zip(*(_journal_parts(run, journal) for run, journal in items), strict=True)
    ]
    cancelled = [
        {"owner": row["run_id"], "seq": row["seq"]}
        for _, journal in items
        for row in journal.cancelled
    ]
    rows = await pg.fetch(
        _checkpoint_statement(bool(cancelled)),
        json_text([_move(run) for run, _ in items]),
        [run.id for run, _ in items],
        owner,
        *(json_text(part) for part in parts),
        [event_id for _, journal in items for event_id in journal.taken],
        *([json_text(cancelled)] if cancelled else []),
    )
    revisions = {row["id"]: row["revision"] for row in rows}
    answer: list[RunRecord | StaleRun] = []
    for run, journal in items:
        journal.clear()
        if run.id in revisions:
            answer.append(replace(run, revision=revisions[run.id]))
        else:
            answer.append(StaleRun(f"run {run.id} was changed by another worker"))
    return answer


async def record_facts(pg: Executor, run: RunRecord, journal: Journal) -> None:
    """Write what happened whoever drives the run (effects done, attempts, timers of its own
    such as a notification's retry, the step a cancelled run stopped in) without moving the
    run; those rows leave the journal."""
    parts = (
        _attempt_rows(journal, run.deliveries),
        _done_rows(journal),
        journal.timers,
        _step_rows(journal),
    )
    if any(parts):
        await pg.execute(_facts_statement(), *(json_text(_owned(run, rows)) for rows in parts))
    for rows in (journal.actions, journal.effects_done, journal.timers, journal.steps):
        rows.clear()
