"""The effect ledger: one row per effect keyed by (run, step visit, action). Every effect is
marked `done` with its result once it is recorded, so a redelivered event skips what was
already done.

An email, which cannot be taken back, is first reserved by its owner (a worker process):
    reserved   held by one owner: a lock against a second live attempt. Nothing is known to
               have been delivered.
    done       its final 250 (the reply to the end of DATA) was read, and recorded at once by a
               statement of its own (`sent`), before the run does anything else; the run's
               checkpoint records it again with the run.
A reservation is taken over only from an owner that stopped keeping its heartbeat (the
`workers` table, persistence/workers.py): a live attempt may wait SMTP_DATA_TIMEOUT_SECONDS for
its reply, and a dead owner's emails are sent again, with the same Message-ID, once its
heartbeat is WORKER_DEAD_AFTER_SECONDS old.

The one window for a duplicate is between the server's 250 and the commit of that record: a
crash of the worker there sends the email again. It is kept as short as it can be: the record
is a one-row statement started in the event-loop iteration that read the 250 (the emails of one
iteration share it), and it does not wait for the disk (synchronous_commit off, like a run's
creation): a committed record survives the death of any worker; only a crash of PostgreSQL
itself within a fraction of a second could lose it (then the run's durable checkpoint, which
writes it again, had not committed either).

Within a process the ledger remembers what it holds and what it sent but could not record yet
(the database away), so a run that goes round again after an outage never sends an email twice.
So that a worker killed during such an outage does not leave the next one to send it again,
the 250 is also noted outside PostgreSQL when its record fails or has not gone through within
NOTE_AFTER_SECONDS: in a local file of this process (`SentSpool`, which outlives Redis losing
its data) and in Redis (`SentNotes`, which a worker on another host can read). A worker that
takes a dead owner's reservation over looks in both first, and every worker records what dead
processes of its host left in their files (`settle_spooled`). A reservation whose release
failed stays this live owner's: it is given up after the next heartbeat that goes through
(`settle_pending`), so that no other worker waits for it for as long as this one lives; so is
the record of a 250 that failed.
For a run's first step the reservations are taken with the run's creation (runs.start_events):
`hold` tells the ledger so, and `reserve` then costs no round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from time import monotonic
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import select

from workflow_core.actions.base import ActionCall
from workflow_core.errors import EffectBusy, Unavailable
from workflow_core.log import get_logger
from workflow_core.persistence import sql
from workflow_core.persistence.pool import Executor, Pool, json_text, translate_errors
from workflow_core.persistence.tables import effects
from workflow_core.runtime.coalesce import Coalescer

log = get_logger(__name__)

RESERVED, DONE = "reserved", "done"
# A `done` record takes a few milliseconds; one that takes longer than this is waiting on a
# database that may not answer for a while, and the 250 is noted in Redis meanwhile.
NOTE_AFTER_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class EffectState:
    state: str
    result: dict[str, Any] | None


def emails_done(ledger: Mapping[str, EffectState]) -> int:
    """How many emails a run has sent, by its ledger (MAX_EMAILS_PER_RUN): an email's effect is
    the one whose result carries a `message_id` (send_email's, the assignee's notices too)."""
    return sum(
        1
        for effect in ledger.values()
        if effect.state == DONE and effect.result and "message_id" in effect.result
    )


async def for_run(db: Executor, run_id: UUID) -> dict[str, EffectState]:
    rows = await sql.fetch(
        db,
        select(effects.c.key, effects.c.state, effects.c.result).where(effects.c.run_id == run_id),
    )
    return {row["key"]: EffectState(row["state"], row["result"]) for row in rows}


_LIVE_OWNER = (
    "EXISTS (SELECT 1 FROM workers w WHERE w.owner = effects.owner "
    "AND w.heartbeat_at > now() - make_interval(secs => $4))"
)
# Returns whether the row was there already (taken over, or ours again): `xmax` is 0 only
# for a row this statement inserted.
_RESERVE = f"""
    INSERT INTO effects (key, run_id, state, owner) VALUES ($1, $2, 'reserved', $3)
    ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, updated_at = now()
    WHERE effects.state = 'reserved'
      AND (effects.owner = excluded.owner OR ($5 AND (effects.owner IS NULL OR NOT {_LIVE_OWNER})))
    RETURNING xmax <> 0 AS existed
"""


class SentNotes(Protocol):
    """Where a 250 is noted when PostgreSQL cannot take its record (adapters.streams)."""

    async def note(self, key: str, result: Mapping[str, Any]) -> None: ...

    async def recall(self, key: str) -> dict[str, Any] | None: ...


SpooledSent = tuple[str, str, dict[str, Any]]  # key, run id, result


class SentSpool(Protocol):
    """A local file where a 250 is noted too, for when Redis is away as well
    (adapters.sent_spool)."""

    def note(self, key: str, run_id: str, result: Mapping[str, Any]) -> None: ...

    def recall(self, key: str) -> dict[str, Any] | None: ...

    async def settle_orphans(
        self, record: Callable[[list[SpooledSent]], Awaitable[None]]
    ) -> int: ...

    def close(self, *, remove: bool) -> None: ...


_HOLDER = """
    SELECT e.state, e.result,
           GREATEST(0, $2 - extract(epoch FROM now() - w.heartbeat_at)) AS wait
    FROM effects e LEFT JOIN workers w ON w.owner = e.owner WHERE e.key = $1
"""
_RELEASE = "DELETE FROM effects WHERE key = ANY($1::text[]) AND owner = $2 AND state = 'reserved'"
_SENT = """
    INSERT INTO effects (key, run_id, state, result, owner)
    SELECT key, run_id, 'done', result, $2 FROM jsonb_to_recordset($1::jsonb)
        AS x(key text, run_id uuid, result jsonb)
    ON CONFLICT (key) DO UPDATE SET state = 'done', result = excluded.result, updated_at = now()
"""


class DbEffectLedger:
    """`EffectLedger` on PostgreSQL for one owner (a worker process: a restarted worker is a
    new owner). `dead_after` is the age of a heartbeat that makes its owner dead.

    A reservation is taken over from a dead owner only once this process's own heartbeat has
    been written without a break for `dead_after` (`beating_since`): after an outage of the
    database every owner's heartbeat looks old, and the others need a moment to beat again."""

    def __init__(
        self,
        pool: Pool,
        *,
        owner: str,
        dead_after: float,
        eager_pool: Pool | None = None,
        notes: SentNotes | None = None,
        spool: SentSpool | None = None,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        """`eager_pool`: where `sent` records go (a pool whose commits do not wait for the
        disk, see pool.create_pool); `pool` by default. `notes` and `spool`: where a 250 is
        noted when its record is late (Redis, and a local file for when Redis is away too)."""
        self._pool, self._owner, self._dead_after = pool, owner, dead_after
        self._notes, self._spool = notes, spool
        self._clock = clock
        self._held: set[str] = set()
        self._unreleased: set[str] = set()
        self._releasing = asyncio.Lock()
        # Sent (a 250 was read) but not recorded done yet: by key, the call and its result.
        self._unrecorded: dict[str, tuple[ActionCall, dict[str, Any]]] = {}
        self._beating_since: float | None = None
        eager = eager_pool or pool
        self._marks: Coalescer[tuple[ActionCall, dict[str, Any]], None] = Coalescer(
            lambda items: self._mark(eager, items), lambda item: self._mark_one(eager, item)
        )

    def heartbeat(self, written: bool) -> None:
        """The heartbeat loop says whether its last write went through."""
        if not written:
            self._beating_since = None
        elif self._beating_since is None:
            self._beating_since = self._clock()

    def _may_take_over(self) -> tuple[bool, float]:
        """Whether dead owners' reservations may be taken now, else how long until they may."""
        if self._beating_since is None:
            return False, self._dead_after
        waited = self._clock() - self._beating_since
        return waited >= self._dead_after, max(self._dead_after - waited, 0.0)

    @property
    def owner(self) -> str:
        return self._owner

    def hold(self, keys: Iterable[str]) -> None:
        """Reservations taken for this owner by another statement (a run's creation)."""
        self._held.update(keys)

    async def reserve(self, call: ActionCall) -> Mapping[str, Any] | None:
        if call.key in self._unrecorded:
            return self._unrecorded[call.key][1]
        if call.key in self._held:
            return None
        if call.key in self._unreleased:
            async with self._releasing:  # not while a late release of it is out
                if call.key in self._unreleased:  # still ours: a release never reached it
                    self._unreleased.discard(call.key)
                    self._held.add(call.key)
                    return None
        may_take_over, not_before = self._may_take_over()
        async with translate_errors():
            existed = await self._pool.fetchval(
                _RESERVE, call.key, call.run_id, self._owner, self._dead_after, may_take_over
            )
            if existed is not None:
                self._held.add(call.key)
                return await self._noted(call) if existed else None
            holder = await self._pool.fetchrow(_HOLDER, call.key, self._dead_after)
        if holder is None:  # released between the two statements: take it next time
            raise EffectBusy("the effect was just released; trying again", retry_after=0.1)
        if holder["state"] == DONE:
            return dict(holder["result"] or {})
        wait = float(holder["wait"]) if holder["wait"] is not None else 0.0
        raise EffectBusy(
            "another live attempt holds this email; trying again once it is over or its "
            "worker stops keeping its heartbeat",
            retry_after=max(min(wait, self._dead_after), not_before) + 0.5,
        )

    async def _noted(self, call: ActionCall) -> dict[str, Any] | None:
        """A reservation taken from another owner: whether it sent the email and could only
        note it (the database was away when its 250 came). If so, it is recorded done now."""
        result = self._spool.recall(call.key) if self._spool is not None else None
        if result is None and self._notes is not None:
            try:
                result = await self._notes.recall(call.key)
            except Exception as error:  # the note may be gone with Redis: we cannot know better
                log.warning("sent_notes_unreadable", key=call.key, error=str(error))
        if result is not None:
            log.warning("sent_email_recovered_from_note", key=call.key)
            await self.sent(call, result)
        return result

    async def sent(self, call: ActionCall, result: Mapping[str, Any]) -> None:
        """Its 250 was read: record the email as done now (see the module's docstring). When
        PostgreSQL does not take the record within NOTE_AFTER_SECONDS (a cut connection, a
        new one black-holed: it may hang until a timeout), the 250 is noted in Redis at once,
        so a kill during the wait does not leave the next owner to send it again."""
        self._held.discard(call.key)
        self._unrecorded[call.key] = (call, dict(result))
        record = asyncio.ensure_future(self._record(call, dict(result)))
        done, _ = await asyncio.wait({record}, timeout=NOTE_AFTER_SECONDS)
        noted = not done
        if noted:
            await self._note(call, result)
        try:
            await record
        except Unavailable:
            if not noted:
                await self._note(call, result)
            raise
        self._unrecorded.pop(call.key, None)

    async def _record(self, call: ActionCall, result: dict[str, Any]) -> None:
        async with translate_errors():
            await self._marks((call, result))

    async def _note(self, call: ActionCall, result: Mapping[str, Any]) -> None:
        """The local file first: it answers in microseconds and outlives Redis losing its
        data; Redis next, which another host's worker can read."""
        if self._spool is not None:
            try:
                self._spool.note(call.key, str(call.run_id), result)
            except OSError as error:
                log.warning("sent_spool_failed", key=call.key, error=str(error))
        if self._notes is not None:
            try:
                await self._notes.note(call.key, result)
            except Exception as error:
                log.warning("sent_note_failed", key=call.key, error=str(error))

    async def settle_spooled(self) -> int:
        """Record done the 250s that dead processes of this host could only note in their
        local files (see adapters/sent_spool.py); returns how many."""
        if self._spool is None:
            return 0

        async def record(entries: list[SpooledSent]) -> None:
            async with translate_errors():
                await self._write_done(self._pool, entries)

        settled = await self._spool.settle_orphans(record)
        if settled:
            log.warning("sent_emails_recovered_from_spool", count=settled)
        return settled

    def close_spool(self) -> None:
        """The process retires: its spool file goes if everything in it is recorded."""
        if self._spool is not None:
            self._spool.close(remove=not self._unrecorded)

    async def _mark(self, pool: Pool, items: list[tuple[ActionCall, dict[str, Any]]]) -> list[None]:
        await self._write_done(pool, [(c.key, c.run_id, result) for c, result in items])
        return [None] * len(items)

    async def _write_done(
        self, pool: Pool, sent: Iterable[tuple[str, UUID | str, dict[str, Any]]]
    ) -> None:
        """The one statement that records emails done: (key, run id, result) each."""
        rows = [{"key": key, "run_id": run_id, "result": result} for key, run_id, result in sent]
        await pool.execute(_SENT, json_text(rows), self._owner)

    async def _mark_one(self, pool: Pool, item: tuple[ActionCall, dict[str, Any]]) -> None:
        await self._mark(pool, [item])

    def recorded(self, keys: Iterable[str]) -> None:
        """These effects' `done` records are committed."""
        for key in keys:
            self._unrecorded.pop(key, None)

    async def release(self, key: str) -> None:
        await self._release([key])

    async def release_held(self, run_id: UUID) -> None:
        """Give up every reservation of the run this owner holds and did not use (its step
        failed, or waits for a retry), so that another attempt need not wait for it."""
        prefix = f"{run_id}/"
        held = [key for key in self._held if key.startswith(prefix)]
        if held:
            await self._release(held)

    async def _release(self, keys: list[str]) -> None:
        """Give reservations up. One the database could not take back stays this live
        owner's, and every other attempt would wait for it as long as this process lives: it
        is kept, and given up by `settle_pending` (after each heartbeat) once PostgreSQL
        answers again."""
        self._held.difference_update(keys)
        try:
            async with translate_errors():
                await self._pool.execute(_RELEASE, keys, self._owner)
        except Unavailable:
            self._unreleased.update(keys)
            raise

    async def settle_pending(self) -> None:
        """Record done the emails sent whose record failed, and give up the reservations a
        failed release left behind: until then this live owner holds them, and every other
        worker would wait for them."""
        if self._unrecorded:
            pending = list(self._unrecorded.values())
            async with translate_errors():
                await self._mark(self._pool, pending)
            self.recorded(call.key for call, _ in pending)
            log.info("sent_emails_recorded_late", count=len(pending))
        await self._release_pending()

    async def _release_pending(self) -> None:
        if not self._unreleased:
            return
        async with self._releasing:
            keys = list(self._unreleased)
            async with translate_errors():
                await self._pool.execute(_RELEASE, keys, self._owner)
            self._unreleased.difference_update(keys)
            log.info("reservations_released_late", count=len(keys))
