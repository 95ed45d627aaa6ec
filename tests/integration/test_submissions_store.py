"""Storing submissions with idempotency keys (persistence/submissions.py), against the real
database: the key is taken in the statement that stores the submission, so a repeat, whether
it comes later, in the same statement or from a concurrent transaction, stores nothing and
gets the first answer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from tests.support.waiting import eventually
from workflow_core.persistence import submissions
from workflow_core.persistence.pool import Pool
from workflow_core.persistence.submissions import Accepted, NewSubmission


def form(key: str | None = "key-1", org_id: str = "org_a", **data: Any) -> NewSubmission:
    return NewSubmission("contact", org_id, data, datetime.now(UTC), key)


async def store(pg: Any, *forms: NewSubmission) -> list[Accepted]:
    return await submissions.store(pg, list(forms), submissions.prepare(list(forms)))


async def counts(pool: Pool) -> tuple[int, int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM submissions) AS s, (SELECT count(*) FROM outbox) AS o, "
        "(SELECT count(*) FROM idempotency_keys) AS k"
    )
    assert row is not None
    return row["s"], row["o"], row["k"]


async def test_a_key_used_again_gets_the_first_answer_and_stores_nothing(pool: Pool) -> None:
    [first] = await store(pool, form(n=1))
    [again] = await store(pool, form(n=2))

    assert first.event is not None and not first.replayed
    assert again.replayed and again.event is None
    assert (again.submission_id, again.event_id) == (first.submission_id, first.event_id)
    assert await counts(pool) == (1, 1, 1)
    data = await pool.fetchval("SELECT data FROM submissions")
    assert data == {"n": 1}  # the first form's


async def test_the_same_key_in_another_organisation_is_another_submission(pool: Pool) -> None:
    [a] = await store(pool, form(org_id="org_a"))
    [b] = await store(pool, form(org_id="org_b"))

    assert not a.replayed and not b.replayed and a.submission_id != b.submission_id
    assert await counts(pool) == (2, 2, 2)


async def test_a_key_older_than_24_hours_is_taken_over_by_the_next_form(pool: Pool) -> None:
    [old] = await store(pool, form())
    await pool.execute("UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 s'")

    [new] = await store(pool, form())
    [repeat] = await store(pool, form())

    assert not new.replayed and new.submission_id != old.submission_id
    assert repeat.replayed and repeat.submission_id == new.submission_id
    assert await counts(pool) == (2, 2, 1)
    kept = await pool.fetchval("SELECT submission_id FROM idempotency_keys")
    assert UUID(str(kept)) == new.submission_id


async def test_a_key_just_under_24_hours_old_still_answers(pool: Pool) -> None:
    [first] = await store(pool, form())
    await pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '23 hours 59 min'"
    )

    [again] = await store(pool, form())

    assert again.replayed and again.submission_id == first.submission_id


async def test_repeats_in_one_statement_share_the_first_answer(pool: Pool) -> None:
    answers = await store(pool, form(n=1), form(key=None), form(n=2), form(key="key-2"), form(n=3))

    first = answers[0]
    assert [a.replayed for a in answers] == [False, False, True, False, True]
    assert {(a.submission_id, a.event_id) for a in (answers[2], answers[4])} == {
        (first.submission_id, first.event_id)
    }
    assert await counts(pool) == (3, 3, 2)


async def test_forms_without_a_key_are_always_new(pool: Pool) -> None:
    answers = await store(pool, form(key=None), form(key=None))
    assert len({a.submission_id for a in answers}) == 2
    assert await counts(pool) == (2, 2, 0)


async def _waiting_for_a_lock(pool: Pool) -> bool:
    waiting = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )
    return bool(waiting)


async def test_a_concurrent_repeat_waits_for_the_first_transaction_and_gets_its_answer(
    pool: Pool,
) -> None:
    """The repeat's statement cannot see the first form's key in its snapshot (that committed
    after the statement began); it waits on the key's row and reads it as committed."""
    async with pool.acquire() as first_connection:
        transaction = first_connection.transaction()
        await transaction.start()
        [first] = await store(first_connection, form(n=1))
        repeat = asyncio.create_task(store(pool, form(n=2)))
        await eventually(lambda: _waiting_for_a_lock(pool), what="the repeat to wait")
        assert not repeat.done()
        await transaction.commit()
        [again] = await repeat

    assert again.replayed and (again.submission_id, again.event_id) == (
        first.submission_id,
        first.event_id,
    )
    assert await counts(pool) == (1, 1, 1)


async def test_a_concurrent_repeat_stores_its_own_when_the_first_rolls_back(pool: Pool) -> None:
    async with pool.acquire() as first_connection:
        transaction = first_connection.transaction()
        await transaction.start()
        [first] = await store(first_connection, form(n=1))
        repeat = asyncio.create_task(store(pool, form(n=2)))
        await eventually(lambda: _waiting_for_a_lock(pool), what="the repeat to wait")
        await transaction.rollback()
        [second] = await repeat

    assert not second.replayed and second.submission_id != first.submission_id
    assert await counts(pool) == (1, 1, 1)


async def test_many_concurrent_statements_with_one_key_store_one_submission(pool: Pool) -> None:
    answers = [
        a
        for batch in await asyncio.gather(*(store(pool, form()) for _ in range(12)))
        for a in batch
    ]

    assert len({(a.submission_id, a.event_id) for a in answers}) == 1
    assert sum(not a.replayed for a in answers) == 1
    assert await counts(pool) == (1, 1, 1)


async def test_expired_keys_are_forgotten_and_recent_ones_kept(pool: Pool) -> None:
    await store(pool, form(key="old-1"), form(key="old-2"), form(key="recent"))
    await pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' "
        "WHERE key LIKE 'old-%'"
    )

    assert await submissions.forget_expired_keys(pool, limit=1) == 1
    assert await submissions.forget_expired_keys(pool) == 1
    assert await submissions.forget_expired_keys(pool) == 0
    assert [r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")] == ["recent"]
    assert (await counts(pool))[0] == 3  # the submissions stay
