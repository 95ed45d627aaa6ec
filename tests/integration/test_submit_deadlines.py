"""POST /submit against a database that is slow or away: a form the database may have stored is
never answered 503, and a 503 means nothing was stored. API_DB_TIMEOUT_SECONDS bounds only the
wait for a connection; once a form's statement is out, the answer waits for its verdict."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from services.api.intake import Intake
from tests.conftest import SettingsFactory
from tests.support.examples import example_form
from tests.support.inprocess import InProcessApi, in_process_api
from tests.support.waiting import eventually
from workflow_core.errors import Unavailable
from workflow_core.persistence.pool import Pool
from workflow_core.persistence.submissions import NewSubmission

API_TIMEOUT = 0.2


def slow_commit(seconds: float) -> str:
    """A trigger that makes every commit of a submission take `seconds` (it runs at commit)."""
    return f"""
        CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON submissions
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
    """


@pytest.fixture
async def api(make_settings: SettingsFactory) -> AsyncIterator[InProcessApi]:
    async with in_process_api(make_settings(api_db_timeout_seconds=API_TIMEOUT)) as started:
        yield started


async def stored_ids(pool: Pool) -> list[UUID]:
    return [UUID(str(row["id"])) for row in await pool.fetch("SELECT id FROM submissions")]


async def no_statement_running(pool: Pool) -> bool:
    """No submission statement is under way in this test's database (none is stored later)."""
    running = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'active' AND query LIKE '%jsonb_to_recordset%' AND pid <> pg_backend_pid()"
    )
    return running == 0


async def timed_submit(client: httpx.AsyncClient, **data: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.post("/submit", json=example_form(**data))
    return response, time.monotonic() - started


async def test_a_commit_slower_than_the_request_timeout_is_answered_202_and_stored_once(
    api: InProcessApi, pool: Pool
) -> None:
    await pool.execute(slow_commit(0.6))

    response, elapsed = await timed_submit(api.client)

    assert response.status_code == 202, response.text
    assert elapsed >= 0.6  # it waited for the commit, far past API_DB_TIMEOUT_SECONDS
    assert await stored_ids(pool) == [UUID(response.json()["submission_id"])]
    events = await pool.fetchval("SELECT count(*) FROM outbox")
    assert events == 1


async def test_under_a_slow_database_every_202_is_stored_and_every_503_stored_nothing(
    api: InProcessApi, pool: Pool
) -> None:
    """A burst against commits that take 0.5 s each: the forms claimed by a statement wait for
    it (202); those still queued behind the two statements in flight when their 0.2 s are up
    get a 503 on time, and none of them is stored later."""
    await pool.execute(slow_commit(0.5))

    answers = await asyncio.gather(*(timed_submit(api.client, n=n) for n in range(8)))

    accepted = [UUID(r.json()["submission_id"]) for r, _ in answers if r.status_code == 202]
    refused = [(r, elapsed) for r, elapsed in answers if r.status_code != 202]
    assert accepted, [r.text for r, _ in answers]
    for response, elapsed in refused:
        assert response.status_code == 503, response.text
        assert "nothing was stored" in response.json()["detail"]
        assert response.headers["retry-after"] == "1"
        assert elapsed < API_TIMEOUT + 1.5, elapsed
    await eventually(lambda: no_statement_running(pool), what="the last statement to end")
    assert sorted(await stored_ids(pool)) == sorted(accepted)


async def test_no_free_connection_is_503_on_time_and_nothing_is_stored(
    api: InProcessApi, pool: Pool
) -> None:
    api_pool = api.database.pool
    held = [await api_pool.acquire() for _ in range(api_pool.get_max_size())]
    try:
        response, elapsed = await timed_submit(api.client)
    finally:
        for connection in held:
            await api_pool.release(connection)

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert "within 0.2 s (API_DB_TIMEOUT_SECONDS)" in response.json()["detail"]
    assert "nothing was stored" in response.json()["detail"]
    assert API_TIMEOUT * 0.9 <= elapsed < API_TIMEOUT + 1.5
    assert await stored_ids(pool) == []
    again, _ = await timed_submit(api.client)
    assert again.status_code == 202
    assert await stored_ids(pool) == [UUID(again.json()["submission_id"])]


async def test_a_connection_killed_before_the_commit_is_503_and_nothing_is_stored(
    api: InProcessApi, pool: Pool
) -> None:
    await pool.execute(slow_commit(30))
    answer = asyncio.create_task(timed_submit(api.client))

    async def committing_backend() -> int | None:
        pid: int | None = await pool.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event = 'PgSleep' AND query LIKE '%jsonb_to_recordset%'"
        )
        return pid

    pid = await eventually(committing_backend, what="the submission's commit to be under way")
    assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
    response, _ = await answer

    assert response.status_code == 503, response.text
    assert "the connection broke while storing" in response.json()["detail"]
    assert "the form was not stored" in response.json()["detail"]
    assert await stored_ids(pool) == []


class _AnswerLost:
    """A pool whose connections run each statement, then report the connection broken: the
    commit happened, its answer never came back."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def acquire(self, *, timeout: float) -> _LosingConnection:
        return _LosingConnection(await self.pool.acquire(timeout=timeout))

    async def release(self, connection: _LosingConnection) -> None:
        await self.pool.release(connection.inner)

    async def fetch(self, query: str, *args: Any) -> Any:
        return await self.pool.fetch(query, *args)


class _LosingConnection:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        await self.inner.fetch(query, *args, timeout=timeout)
        raise asyncpg.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        )

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        await self.inner.execute(query, *args, timeout=timeout)
        raise asyncpg.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        )

    def terminate(self) -> None:
        self.inner.terminate()


@pytest.mark.parametrize("key", [None, "key-1"], ids=["plain", "with-a-key"])
async def test_a_commit_whose_answer_was_lost_is_looked_up_and_accepted(
    pool: Pool, key: str | None
) -> None:
    intake = Intake(_AnswerLost(pool), timeout=1.0, statement_timeout=5.0)  # type: ignore[arg-type]
    form = NewSubmission("contact", "org_lost", {"n": 1}, datetime.now(UTC), key)

    accepted = await intake(form)

    assert accepted.event is not None and not accepted.replayed
    assert await stored_ids(pool) == [accepted.submission_id]


async def test_a_statement_cancelled_by_its_timeout_is_503_and_stored_nothing(
    make_settings: SettingsFactory, pool: Pool
) -> None:
    settings = make_settings(api_db_timeout_seconds=API_TIMEOUT, db_statement_timeout_seconds=0.3)
    await pool.execute(
        """
        CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(5); RETURN NULL; END $$;
        CREATE TRIGGER slow_insert AFTER INSERT ON submissions
            FOR EACH STATEMENT EXECUTE FUNCTION slow_insert();
        """
    )
    async with in_process_api(settings) as api:
        response, elapsed = await timed_submit(api.client)

    assert response.status_code == 503, response.text
    assert "DB_STATEMENT_TIMEOUT_SECONDS" in response.json()["detail"]
    assert "nothing was stored" in response.json()["detail"]
    assert elapsed < 3
    assert await stored_ids(pool) == []


async def test_the_intake_refuses_with_unavailable_not_a_timeout(pool: Pool) -> None:
    """Held connections: the intake's own error is `Unavailable`, whatever layer timed out."""
    intake = Intake(pool, timeout=0.1, statement_timeout=5.0)
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        with pytest.raises(Unavailable, match="nothing was stored"):
            await intake(NewSubmission("t", "o", {}, datetime.now(UTC)))
    finally:
        for connection in held:
            await pool.release(connection)
    assert await stored_ids(pool) == []


class _AnswerLostThenAway(_AnswerLost):
    """As `_AnswerLost`, and then the database cannot be reached for `away` seconds (a cut:
    new connections refused), as when the commit's connection broke with the network."""

    def __init__(self, pool: Pool, away: float) -> None:
        super().__init__(pool)
        self.back_at = time.monotonic() + away
        self.questions = 0

    async def fetch(self, query: str, *args: Any) -> Any:
        self.questions += 1
        if time.monotonic() < self.back_at:
            raise ConnectionRefusedError("connection refused")
        return await self.pool.fetch(query, *args)


async def test_a_commit_whose_answer_was_lost_during_a_cut_is_looked_up_once_the_cut_is_over(
    pool: Pool,
) -> None:
    """The database is asked again and again until it answers (within the statement's
    deadline): a stored form is answered 202, not an "unknown" 503 a retry would duplicate."""
    lost = _AnswerLostThenAway(pool, away=2.0)
    intake = Intake(lost, timeout=0.2, statement_timeout=5.0)  # type: ignore[arg-type]
    form = NewSubmission("contact", "org_cut", {"n": 1}, datetime.now(UTC))

    accepted = await intake(form)

    assert lost.questions > 1
    assert await stored_ids(pool) == [accepted.submission_id]


async def test_a_database_that_never_answers_whether_it_stored_the_form_is_503_unknown(
    pool: Pool,
) -> None:
    lost = _AnswerLostThenAway(pool, away=3600)
    intake = Intake(lost, timeout=0.2, statement_timeout=0.1)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(Unavailable, match="cannot be asked whether the form was stored"):
        await intake(NewSubmission("contact", "org_cut", {"n": 1}, datetime.now(UTC)))
    assert time.monotonic() - started < 10  # the statement's deadline: 0.1 s + the grace
