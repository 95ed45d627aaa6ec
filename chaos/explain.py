"""Evidence for the report: the whole record PostgreSQL keeps of each run that broke an
invariant (steps, action attempts, effects, timers, its events in the outbox), with times
relative to the start of the load, and the process log lines that name it. It goes to
evidence.txt in the run directory, so a failure can be diagnosed after the database is gone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncpg

MAX_RUNS = 25
MAX_LOG_LINES = 12

_QUERIES = {
    "run": """
        SELECT status, current_step_id, step_seq, deliveries, revision, error,
               extract(epoch FROM created_at) - $2 AS created,
               extract(epoch FROM updated_at) - $2 AS updated
        FROM runs WHERE id = $1""",
    "steps": """
        SELECT seq, step_id, status, extract(epoch FROM entered_at) - $2 AS entered,
               extract(epoch FROM finished_at) - $2 AS finished, error
        FROM run_steps WHERE run_id = $1 ORDER BY seq""",
    "actions": """
        SELECT step_seq, step_id, action_index, action_type, attempt, status, delivery,
               extract(epoch FROM started_at) - $2 AS started,
               extract(epoch FROM finished_at) - $2 AS finished, error,
               result->>'message_id' AS message_id, result->>'deduplicated' AS deduplicated
        FROM run_actions WHERE run_id = $1 ORDER BY id""",
    "effects": """
        SELECT key, state, owner, extract(epoch FROM created_at) - $2 AS created,
               extract(epoch FROM updated_at) - $2 AS updated
        FROM effects WHERE run_id = $1 ORDER BY key""",
    "timers": """
        SELECT kind, extract(epoch FROM due_at) - $2 AS due,
               extract(epoch FROM fired_at) - $2 AS fired, payload::text
        FROM timers WHERE run_id = $1 ORDER BY due_at""",
    "outbox": """
        SELECT event_type, event_id, extract(epoch FROM created_at) - $2 AS created,
               extract(epoch FROM published_at) - $2 AS published, stream_entry_id
        FROM outbox
        WHERE submission_id = (SELECT submission_id FROM runs WHERE id = $1)
           OR payload->>'run_id' = $1::text
        ORDER BY id""",
}


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"+{value:.1f}s"
    return "-" if value is None else str(value)


async def run_record(connection: asyncpg.Connection, run_id: str, t0_wall: float) -> list[str]:
    lines = [f"run {run_id}"]
    for name, query in _QUERIES.items():
        try:
            rows = await connection.fetch(query, run_id, t0_wall)
        except asyncpg.PostgresError as error:  # the schema moved on: say so, go on
            lines.append(f"  {name}: unreadable ({error})")
            continue
        for row in rows:
            fields = "  ".join(f"{k}={_format(v)}" for k, v in row.items() if v is not None)
            lines.append(f"  {name}: {fields}")
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


async def explain(dsn: str, run_ids: Sequence[str], logs: Sequence[Path], t0_wall: float) -> str:
    """The record of the first MAX_RUNS of `run_ids` (duplicates dropped), as text."""
    unique = list(dict.fromkeys(run_ids))[:MAX_RUNS]
    if not unique:
        return ""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        blocks = []
        for run_id in unique:
            lines = await run_record(connection, run_id, t0_wall)
            lines += log_lines(logs, run_id) or ["  (no log line names this run)"]
            blocks.append("\n".join(lines))
    finally:
        await connection.close()
    more = len(dict.fromkeys(run_ids)) - len(unique)
    tail = f"\n\n({more} more runs not shown)" if more > 0 else ""
    return "\n\n".join(blocks) + tail + "\n"
