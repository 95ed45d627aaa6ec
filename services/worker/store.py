"""The runner's door to PostgreSQL. Concurrent runs share their round trips here: the events
taken while the previous statement of their kind was out are started together, and so are the
checkpoints (coalesce.py); callers pass one item and never see the batching."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from workflow_core.engine.gates import Gate, GateKeys
from workflow_core.persistence import (
    checkpoints,
    control,
    effects,
    gates,
    human_tasks,
    posted_events,
    runs,
)
from workflow_core.persistence.effects import DbEffectLedger
from workflow_core.persistence.journal import Journal
from workflow_core.persistence.pool import Pool, translate_errors
from workflow_core.persistence.runs import RunRecord
from workflow_core.runtime.coalesce import Coalescer
from workflow_core.statuses import RunStatus

STATEMENTS_IN_FLIGHT = 1  # per kind (event starts, checkpoints): the rest wait and share the next


class RunStore:
    def __init__(self, pool: Pool, eager_pool: Pool, ledger: DbEffectLedger) -> None:
        """`eager_pool` does not wait for the disk (pg.create_pool): run creations may be lost
        in a crash of PostgreSQL, which the event's redelivery (or the sweep) makes good."""
        self._pool, self._ledger = pool, ledger
        owner = ledger.owner
        self._starts: Coalescer[runs.EventStart, list[runs.Inserted]] = Coalescer(
            lambda starts: runs.start_events(eager_pool, starts, owner=owner),
            max_in_flight=STATEMENTS_IN_FLIGHT,
        )
        self._checkpoints: Coalescer[tuple[RunRecord, Journal], RunRecord] = Coalescer(
            lambda items: checkpoints.checkpoint_many(pool, items, owner=owner),
            max_in_flight=STATEMENTS_IN_FLIGHT,
        )

    async def start(self, start: runs.EventStart) -> list[runs.Inserted]:
        """Create the event's runs (or find them) and mark the event taken."""
        async with translate_errors():
            inserted = await self._starts(start)
        for created in inserted:
            self._ledger.hold(created.held)
        return inserted

    async def taken(self, event_id: UUID) -> None:
        """The event was handled without a checkpoint of its own (it changed nothing)."""
        await self.start(runs.EventStart(event_id))

    async def checkpoint(self, run: RunRecord, journal: Journal) -> RunRecord:
        """The run's new state and its journal; `StaleRun` when another worker moved it on (its
        facts are written all the same)."""
        keys = journal.effect_keys()
        try:
            async with translate_errors():
                return await self._checkpoints((run, journal))
        finally:
            if not journal.effects_done:  # the statement went through (a stale run's too)
                self._ledger.recorded(keys)

    async def record(self, run: RunRecord, journal: Journal) -> None:
        """What happened whoever drives the run, without moving it."""
        keys = journal.effect_keys()
        async with translate_errors():
            await checkpoints.record_facts(self._pool, run, journal)
        self._ledger.recorded(keys)

    async def fail(self, run_id: UUID, reason: str, *, fresh: RunRecord | None) -> None:
        async with translate_errors():
            await runs.fail(self._pool, run_id, reason, owner=self._ledger.owner, fresh=fresh)

    async def cancelled(self, run_id: UUID) -> bool:
        """Whether the run was cancelled (POST /runs/{id}/cancel) since it was loaded."""
        async with translate_errors():
            return await control.status_of(self._pool, run_id) == RunStatus.CANCELLED

    async def admit(self, run: RunRecord, gate: Gate, *, me: bool) -> int | None:
        """Let in the queued runs of `run`'s keys that fit now (engine/gates.py decides).
        With `me`, `run` itself is this worker's to drive when it is let in: its new revision,
        else None. Only runs of workflows with limits come here."""
        keys = GateKeys(run.concurrency_key, run.throttle_key)
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            admitted = await gates.admit(
                conn,
                run.workflow_id,
                run.org_id,
                keys,
                gate,
                me=run.id if me else None,
                owner=self._ledger.owner,
            )
        return admitted.get(run.id) if me else None

    async def load(self, run_id: UUID) -> RunRecord | None:
        async with translate_errors():
            return await runs.get(self._pool, run_id)

    async def effects(self, run_id: UUID) -> dict[str, effects.EffectState]:
        async with translate_errors():
            return await effects.for_run(self._pool, run_id)

    async def task(self, task_id: UUID, *, time_out: bool = False) -> dict[str, Any] | None:
        """A task; with `time_out`, closed first if it is still pending (its deadline fired)."""
        async with translate_errors():
            closed = await human_tasks.time_out(self._pool, task_id) if time_out else None
            return closed or await human_tasks.get(self._pool, task_id)

    async def settle_waits(self, payload: dict[str, Any]) -> int:
        """Settle the waits a posted event matches, queueing their runs' resumes."""
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            return await posted_events.settle_by_event(conn, payload)

    async def event_wait(
        self, run_id: UUID, step_seq: int, *, look_back: bool = False, time_out: bool = False
    ) -> dict[str, Any] | None:
        """A run's event wait; first settled with an event that came before it (`look_back`)
        or as timed out (`time_out`) if it is still open."""
        async with translate_errors(), self._pool.acquire() as conn:
            if look_back:
                await posted_events.settle_from_kept(conn, run_id, step_seq)
            if time_out:
                await posted_events.time_out(conn, run_id, step_seq)
            return await posted_events.get_wait(conn, run_id, step_seq)
