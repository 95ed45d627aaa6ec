"""The hot path of POST /submit: forms stored with their events, one statement per batch of
concurrent requests (coalesce.py), and bounded in time only where that is safe.

A request waits at most API_DB_TIMEOUT_SECONDS for its form to be *claimed*: taken, on a pooled
connection, into a statement that is about to be sent. Until then nothing can be stored, and
running out of time is a 503 (`Unavailable`). From then on the request has no deadline of its
own: it waits for the statement's verdict, which DB_STATEMENT_TIMEOUT_SECONDS bounds (on the
server, then a little later on the client). So a form that may have been stored is never
answered 503 while the database can still say whether it was. When the connection breaks
while the statement is out, the outcome is unknown to us: the submissions are looked up
before the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from uuid import UUID

import asyncpg

from workflow_core.errors import Unavailable
from workflow_core.events import Event
from workflow_core.log import get_logger
from workflow_core.persistence import posted_events, submissions
from workflow_core.persistence.pool import Pool, PoolConnection, is_unavailable
from workflow_core.persistence.submissions import Accepted, NewSubmission
from workflow_core.runtime.coalesce import Coalescer

log = get_logger(__name__)

KEY_PRUNE_SECONDS = 600.0
EVENT_PRUNE_BATCH = 10_000
"""How often each API process deletes idempotency keys older than 24 hours."""

# What a claim its request gave up on gets (nobody reads it: the coalescer skips it).
_GAVE_UP = Unavailable("the request gave up before its form was stored")

LOOK_UP_PAUSE_SECONDS = 0.25
"""Between two questions to a database that did not answer whether a form was stored."""

STATEMENT_GRACE_SECONDS = 5.0
"""How much longer than the server's statement_timeout the client waits for a statement's
answer: the server's verdict (a definite "not stored") comes first; the client's timeout only
catches a database that went silent."""


class _Claim:
    """One request's form on its way into a statement. The request's deadline (an asyncio
    timeout around its wait) holds until a batch claims the form, and no longer."""

    __slots__ = ("_deadline", "form", "waiting")

    def __init__(self, form: NewSubmission, deadline: asyncio.Timeout) -> None:
        self.form, self._deadline, self.waiting = form, deadline, True

    def take(self) -> bool:
        """Claim the form for a statement about to be sent: True, and the request's deadline
        is lifted; False when the request gave up already (its deadline passed, or it was
        cancelled), and the form must not be stored."""
        if not self.waiting or self._deadline.expired():
            return False
        self._deadline.reschedule(None)
        return True


class Intake:
    def __init__(self, pool: Pool, *, timeout: float, statement_timeout: float) -> None:
        self._pool, self._timeout = pool, timeout
        self._statement_timeout = statement_timeout + STATEMENT_GRACE_SECONDS
        # Under load, the forms arriving while two statements are out gather for the next one.
        self._coalescer: Coalescer[_Claim, Accepted] = Coalescer(
            self._store, self._store_one, max_in_flight=2
        )

    async def __call__(self, form: NewSubmission) -> Accepted:
        """Store the form with its event, or give its earlier answer again (idempotency key);
        `Unavailable` when it could not be stored."""
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                claim = _Claim(form, deadline)
                try:
                    return await self._coalescer(claim)
                finally:
                    claim.waiting = False
        except TimeoutError:
            raise Unavailable(
                f"database unavailable: the submission could not be stored within "
                f"{self._timeout:g} s (API_DB_TIMEOUT_SECONDS); nothing was stored"
            ) from None

    async def _store_one(self, claim: _Claim) -> Accepted:
        [result] = await self._store([claim])
        if isinstance(result, BaseException):
            raise result
        return result

    async def _store(self, claims: list[_Claim]) -> list[Accepted | BaseException]:
        """One statement for the claims whose requests still wait. A statement the database
        refused (a value, a deadlock) raises: nothing was stored, and the coalescer tries the
        forms one by one."""
        try:
            connection = await self._pool.acquire(timeout=self._timeout)
        except Exception as error:
            if not is_unavailable(error):
                raise
            return [_no_connection(self._timeout, error) for _ in claims]
        try:
            taken = [claim for claim in claims if claim.take()]
            answers = await self._insert(connection, [claim.form for claim in taken])
        finally:
            await self._release(connection)
        by_claim = dict(zip(map(id, taken), answers, strict=True))
        return [by_claim.get(id(claim)) or _GAVE_UP for claim in claims]

    async def _release(self, connection: PoolConnection) -> None:
        """Hand the connection back. Whatever goes wrong there (asyncpg then closes it) does
        not change the statement's outcome, which is the answer."""
        try:
            await self._pool.release(connection)
        except Exception as error:
            log.warning("connection_release_failed", error=f"{type(error).__name__}: {error}")

    async def _insert(
        self, connection: PoolConnection, forms: list[NewSubmission]
    ) -> list[Accepted | BaseException]:
        if not forms:
            return []
        made = submissions.prepare(forms)
        try:
            return list(
                await submissions.store(connection, forms, made, timeout=self._statement_timeout)
            )
        except asyncpg.QueryCanceledError as error:  # rolled back: definitely not stored
            return [
                Unavailable(
                    "database unavailable: storing took longer than DB_STATEMENT_TIMEOUT_SECONDS "
                    f"({error}); nothing was stored"
                )
                for _ in forms
            ]
        except Exception as error:
            if not is_unavailable(error):
                raise
            with contextlib.suppress(asyncpg.InterfaceError):  # closed and handed back
                connection.terminate()  # its statement may still be running: never reuse it
            return await self._look_up(made, error)

    async def _ask_until(self, ids: list[UUID], deadline: float) -> set[UUID] | None:
        """Which of these submissions the database holds, asked again and again (a cut
        connection, new ones black-holed for a while) until `deadline`; None if it never
        answered. Answering "unknown" is the last resort: a client without an idempotency key
        cannot retry it safely."""
        while True:
            left = deadline - time.monotonic()
            try:
                async with asyncio.timeout(max(min(left, self._timeout * 2), 0.1)):
                    return set(await submissions.existing(self._pool, ids))
            except Exception as error:
                if not is_unavailable(error) and not isinstance(error, TimeoutError):
                    raise
            if time.monotonic() + LOOK_UP_PAUSE_SECONDS >= deadline:
                return None
            await asyncio.sleep(LOOK_UP_PAUSE_SECONDS)

    async def _look_up(
        self, made: list[Event], lost: BaseException
    ) -> list[Accepted | BaseException]:
        """The connection broke while the statement was out, so it may or may not have
        committed: the database says which submissions it holds. A form not found was not
        stored (or, with an idempotency key, got an earlier form's answer, which a retry with
        the same key gets again)."""
        ids = [UUID(event.payload["submission_id"]) for event in made]
        why = f"the connection broke while storing ({type(lost).__name__}: {lost})".strip()
        found = await self._ask_until(ids, deadline=time.monotonic() + self._statement_timeout)
        if found is None:
            log.warning("submission_outcome_unknown", forms=len(made), error=why)
            return [
                Unavailable(
                    f"database unavailable: {why}, and the database cannot be asked whether "
                    "the form was stored; a retry with the same Idempotency-Key is safe"
                )
                for _ in made
            ]
        return [
            Accepted(submission_id, event.event_id, event)
            if submission_id in found
            else Unavailable(f"database unavailable: {why}; the form was not stored")
            for event, submission_id in zip(made, ids, strict=True)
        ]


async def forget_expired_keys(
    pool: Pool,
    stop: asyncio.Event,
    *,
    every: float = KEY_PRUNE_SECONDS,
    events_kept: timedelta | None = None,
) -> None:
    """Delete idempotency keys past their 24 hours (and posted events older than
    `events_kept`), at start and then every `every` seconds, until `stop` is set. Only
    housekeeping: an old key is taken over by the next form that brings it anyway."""
    while not stop.is_set():
        try:
            while await submissions.forget_expired_keys(pool) == submissions.KEY_PRUNE_BATCH:
                pass
            if events_kept is not None:
                while await posted_events.forget_old(pool, events_kept) == EVENT_PRUNE_BATCH:
                    pass
        except Exception as error:  # the database is away: next time
            log.warning("idempotency_key_prune_failed", error=f"{type(error).__name__}: {error}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every):
                await stop.wait()


def _no_connection(timeout: float, error: BaseException) -> Unavailable:
    reason = "" if isinstance(error, TimeoutError) else f" ({type(error).__name__}: {error})"
    return Unavailable(
        f"database unavailable: no connection within {timeout:g} s "
        f"(API_DB_TIMEOUT_SECONDS){reason}; nothing was stored"
    )
