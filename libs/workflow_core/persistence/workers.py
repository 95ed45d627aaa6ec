"""Worker processes and their heartbeats: the proof that the owner of a reservation is alive.

Each worker process registers under its owner name (`<consumer>/<random>`: a restarted worker
is a new owner) and keeps `heartbeat_at` fresh. An owner whose heartbeat is older than
WORKER_DEAD_AFTER_SECONDS is dead: its email reservations may be taken over, and the runs it
was driving are picked up again (the reconcile sweep). A worker that stops in order removes
its row, so that what it leaves is taken over at once.
"""

from __future__ import annotations

from workflow_core.persistence.pool import Pool

_BEAT = """
    INSERT INTO workers (owner, consumer) VALUES ($1, $2)
    ON CONFLICT (owner) DO UPDATE SET heartbeat_at = now()
"""
_RETIRE = "DELETE FROM workers WHERE owner = $1"
_FORGET = "DELETE FROM workers WHERE heartbeat_at < now() - make_interval(secs => $1)"


async def beat(pool: Pool, owner: str, consumer: str) -> None:
    """Register the owner, or say it is still alive."""
    await pool.execute(_BEAT, owner, consumer)


async def retire(pool: Pool, owner: str) -> None:
    await pool.execute(_RETIRE, owner)


async def forget_dead(pool: Pool, older_than_seconds: float) -> int:
    """Remove the rows of owners dead for a long time (a reservation whose owner has no row
    counts as dead all the same)."""
    status = await pool.execute(_FORGET, older_than_seconds)
    return int(status.split()[-1])
