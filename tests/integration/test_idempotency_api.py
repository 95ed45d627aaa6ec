"""The Idempotency-Key header of POST /submit (CONTRACT §8), through the app with real
PostgreSQL and Redis: the same key and organisation within 24 hours gets the first answer
again, and nothing is stored or published twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.conftest import SettingsFactory
from tests.support.examples import example_form
from tests.support.inprocess import InProcessApi, in_process_api
from tests.support.waiting import eventually
from workflow_core.adapters.streams import StreamKeys
from workflow_core.persistence.pool import Pool


@pytest.fixture
async def api(make_settings: SettingsFactory) -> AsyncIterator[InProcessApi]:
    async with in_process_api(make_settings()) as started:
        yield started


async def submit(
    client: httpx.AsyncClient, key: str | None, org_id: str = "org_123", **data: Any
) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return await client.post(
        "/submit", json={**example_form(**data), "org_id": org_id}, headers=headers
    )


async def count(pool: Pool, table: str) -> int:
    value: int = await pool.fetchval(f"SELECT count(*) FROM {table}")
    return value


async def test_a_repeated_key_gets_the_first_answer_and_nothing_is_stored_or_sent_twice(
    api: InProcessApi, pool: Pool, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    first = await submit(api.client, "order-42", name="first")

    async def published() -> bool:  # on the stream, and recorded so in the outbox
        unpublished = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return unpublished == 0 and await redis.xlen(keys.stream) == 1

    await eventually(published, what="the first submission's event on the stream")
    again = await submit(api.client, "order-42", name="second")

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert (await count(pool, "submissions"), await count(pool, "outbox")) == (1, 1)
    unpublished = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    assert unpublished == 0 and await redis.xlen(keys.stream) == 1
    stored = (await api.client.get(f"/submissions/{first.json()['submission_id']}")).json()
    assert stored["data"]["name"] == "first"


async def test_the_same_key_in_another_organisation_or_no_key_is_a_new_submission(
    api: InProcessApi, pool: Pool
) -> None:
    ours = await submit(api.client, "k", org_id="org_a")
    theirs = await submit(api.client, "k", org_id="org_b")
    keyless = [await submit(api.client, None) for _ in range(2)]

    ids = {r.json()["submission_id"] for r in (ours, theirs, *keyless)}
    assert len(ids) == 4
    assert all("idempotent-replayed" not in r.headers for r in (ours, theirs, *keyless))
    assert await count(pool, "submissions") == 4


async def test_a_key_older_than_24_hours_is_new_again(api: InProcessApi, pool: Pool) -> None:
    old = await submit(api.client, "monthly")
    await pool.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")

    new = await submit(api.client, "monthly")
    repeat = await submit(api.client, "monthly")

    assert new.json()["submission_id"] != old.json()["submission_id"]
    assert "idempotent-replayed" not in new.headers
    assert repeat.json() == new.json() and repeat.headers["idempotent-replayed"] == "true"
    assert await count(pool, "submissions") == 2


async def test_concurrent_requests_with_one_key_store_one_submission(
    api: InProcessApi, pool: Pool, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    answers = await asyncio.gather(*(submit(api.client, "double-click", n=n) for n in range(20)))

    assert {r.status_code for r in answers} == {202}
    assert len({(r.json()["submission_id"], r.json()["event_id"]) for r in answers}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in answers) == 1
    assert (await count(pool, "submissions"), await count(pool, "outbox")) == (1, 1)

    async def published() -> bool:
        return await redis.xlen(keys.stream) >= 1

    await eventually(published, what="the event on the stream")
    assert await redis.xlen(keys.stream) == 1


@pytest.mark.parametrize(
    "key",
    ["x" * 256, "", "caf\u00e9", "tab\there", "\x7f"],
    ids=["too-long", "empty", "not-ascii", "control", "delete"],
)
async def test_a_bad_key_is_422_naming_the_header(api: InProcessApi, pool: Pool, key: str) -> None:
    response = await api.client.post(
        "/submit",
        json=example_form(),
        headers=[(b"idempotency-key", key.encode("latin-1"))],
    )

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert "Idempotency-Key" in problem["path"]
    assert "1 to 255 printable ASCII characters" in problem["msg"]
    assert await count(pool, "submissions") == 0


async def test_the_longest_key_and_one_with_spaces_and_punctuation_are_taken(
    api: InProcessApi,
) -> None:
    for key in ("x" * 255, "order 42 / retry #1 {~}"):
        first, again = await submit(api.client, key), await submit(api.client, key)
        assert (first.status_code, again.status_code) == (202, 202), first.text
        assert again.json() == first.json()


async def test_the_api_forgets_expired_keys_when_it_starts(
    make_settings: SettingsFactory, pool: Pool
) -> None:
    settings = make_settings()
    async with in_process_api(settings) as api:
        await submit(api.client, "old")
        await submit(api.client, "recent")
    await pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'"
    )

    async with in_process_api(settings):

        async def forgotten() -> bool:
            keys = [r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")]
            return keys == ["recent"]

        await eventually(forgotten, what="the expired key to be deleted")
