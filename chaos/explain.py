"""Evidence for the report: the whole record PostgreSQL keeps of each run that broke an
invariant (steps, action attempts, effects, timers, its events in the outbox), with times
relative to the start of the load, and the process log lines that name it. It goes to
evidence.txt in the run directory, so a failure can be diagnosed after the database is gone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncpg

PER_REASON = 4
MAX_LOG_LINES = 12

_QUERIES = {
    "run": """
        SELECT status, current_step_id, step_seq, deliveries, revision, error,
               extract(epoch FROM created_at)::float8 - $2 AS created,
               extract(epoch FROM updated_at)::float8 - $2 AS updated
        FROM runs WHERE id = $1""",
    "steps": """
        SELECT seq, step_id, status, extract(epoch FROM entered_at)::float8 - $2 AS entered,
               extract(epoch FROM finished_at)::float8 - $2 AS finished, error
        FROM run_steps WHERE run_id = $1 ORDER BY seq""",
    "actions": """
        SELECT step_seq, step_id, action_index, action_type, attempt, status, delivery,
               extract(epoch FROM started_at)::float8 - $2 AS started,
               extract(epoch FROM finished_at)::float8 - $2 AS finished, error,
               result->>'message_id' AS message_id, result->>'deduplicated' AS deduplicated
        FROM run_actions WHERE run_id = $1 ORDER BY id""",
    "effects": """
        SELECT key, state, owner, extract(epoch FROM created_at)::float8 - $2 AS created,
               extract(epoch FROM updated_at)::float8 - $2 AS updated
        FROM effects WHERE run_id = $1 ORDER BY key""",
    "timers": """
        SELECT kind, extract(epoch FROM due_at)::float8 - $2 AS due,
               extract(epoch FROM fired_at)::float8 - $2 AS fired, payload::text
        FROM timers WHERE run_id = $1 ORDER BY due_at""",
    "outbox": """
        SELECT event_type, event_id, extract(epoch FROM created_at)::float8 - $2 AS created,
               extract(epoch FROM published_at)::float8 - $2 AS published, stream_entry_id
        FROM outbox
        WHERE submission_id = (SELECT submission_id FROM runs WHERE id = $1)
           OR payload->>'run_id' = $1::text
        ORDER BY id""",
}


_SUBMISSION_EVENTS = """
    SELECT event_type, event_id, extract(epoch FROM created_at)::float8 - $2 AS created,
           extract(epoch FROM published_at)::float8 - $2 AS published, stream_entry_id
    FROM outbox WHERE submission_id = $1 ORDER BY id"""


def _format(value: object) -> str:
    if isinstance(value, float):  # a time, relative to the start of the load
        return f"{value:+.1f}s"
    return "-" if value is None else str(value)


async def run_record(connection: asyncpg.Connection, run_id: str, t0_wall: float) -> list[str]:
    lines = [f"run {run_id}"]
    for name, query in _QUERIES.items():
        try:
            rows = await connection.fetch(query, run_id, t0_wall)
        except asyncpg.PostgresError as error:  # the schema moved on: say so, go on
            lines.append(f"  {name}: unreadable ({error})")
            continue
        lines += [_row(name, row) for row in rows]
    return lines


def log_lines(logs: Sequence[Path], needle: str) -> list[str]:
    found = []
    for path in logs:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found += [
            f"  log {path.name}: {line[:400]}" for line in text.splitlines() if needle in line
        ]
    return found[:MAX_LOG_LINES]


def _row(name: str, row: asyncpg.Record) -> str:
    return f"  {name}: " + "  ".join(f"{k}={_format(v)}" for k, v in row.items() if v is not None)


async def explain(
    dsn: str,
    runs: Mapping[str, Sequence[str]],
    submissions: Sequence[str],
    logs: Sequence[Path],
    t0_wall: float,
) -> str:
    """The record of the first PER_REASON runs of each reason, and the events of the first
    PER_REASON submissions without a run, as text."""
    if not any(runs.values()) and not submissions:
        return ""
    connection = await asyncpg.connect(dsn, timeout=10)
    blocks = []
    try:
        if submissions:
            shown = submissions[:PER_REASON]
            blocks.append(f"=== no run: {len(submissions)} submissions, the first {len(shown)}")
            for submission_id in shown:
                rows = await connection.fetch(_SUBMISSION_EVENTS, submission_id, t0_wall)
                lines = [f"submission {submission_id}"] + [_row("outbox", r) for r in rows]
                blocks.append("\n".join(lines + log_lines(logs, submission_id)))
        for reason, run_ids in runs.items():
            shown = run_ids[:PER_REASON]
            blocks.append(f"=== {reason}: {len(run_ids)} runs, the first {len(shown)} in full")
            for run_id in shown:
                lines = await run_record(connection, run_id, t0_wall)
                lines += log_lines(logs, run_id) or ["  (no log line names this run)"]
                blocks.append("\n".join(lines))
    finally:
        await connection.close()
    return "\n\n".join(blocks) + "\n"
