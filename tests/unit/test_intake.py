"""The intake's deadlines with a fake pool (no database): a request's API_DB_TIMEOUT_SECONDS
holds until its form is claimed by a statement, and no longer; a form whose request gave up is
never put into a statement."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from services.api.intake import Intake
from workflow_core.errors import Unavailable
from workflow_core.persistence.submissions import NewSubmission


class FakePool:
    """Connections come when the test releases them; statements end when the test says."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[FakeConnection] = asyncio.Queue()
        self.statements: list[list[dict[str, Any]]] = []
        self.sent = asyncio.Condition()
        self.verdict = asyncio.Event()

    async def wait_for_statements(self, count: int) -> None:
        async with asyncio.timeout(5), self.sent:
            await self.sent.wait_for(lambda: len(self.statements) >= count)

    async def acquire(self, *, timeout: float) -> FakeConnection:
        return await self.connections.get()  # a pool slower than its timeout: the worst case

    async def release(self, connection: FakeConnection) -> None:
        pass

    def give_connection(self) -> None:
        self.connections.put_nowait(FakeConnection(self))


class FakeConnection:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool

    async def execute(self, query: str, rows: str, *args: Any, timeout: float) -> str:
        async with self.pool.sent:
            self.pool.statements.append(orjson.loads(rows))
            self.pool.sent.notify_all()
        await self.pool.verdict.wait()
        return "INSERT 0 1"


def form(n: int) -> NewSubmission:
    return NewSubmission("t", "o", {"n": n}, datetime.now(UTC))


def intake(pool: FakePool, timeout: float = 0.05) -> Intake:
    return Intake(pool, timeout=timeout, statement_timeout=10.0)  # type: ignore[arg-type]


async def test_a_claimed_form_waits_past_its_deadline_for_the_verdict() -> None:
    pool = FakePool()
    pool.give_connection()
    answer = asyncio.create_task(intake(pool, timeout=0.05)(form(1)))
    await pool.wait_for_statements(1)

    await asyncio.sleep(0.2)  # four times the request's deadline: it must not matter now
    assert not answer.done()
    pool.verdict.set()

    accepted = await answer
    assert accepted.event is not None
    assert [[row["data"] for row in statement] for statement in pool.statements] == [[{"n": 1}]]


async def test_a_form_whose_deadline_passed_while_waiting_for_a_connection_is_left_out() -> None:
    pool = FakePool()
    pool.verdict.set()
    store = intake(pool, timeout=0.05)

    with pytest.raises(Unavailable, match="nothing was stored"):
        await store(form(1))
    pool.give_connection()  # comes too late: the statement must not carry the form
    pool.give_connection()
    late = await store(form(2))

    assert [[row["data"] for row in statement] for statement in pool.statements] == [[{"n": 2}]]
    assert late.event is not None


async def test_forms_queued_behind_two_statements_in_flight_give_up_on_time() -> None:
    pool = FakePool()
    store = intake(pool, timeout=0.1)
    pool.give_connection()
    pool.give_connection()
    first = asyncio.create_task(store(form(1)))
    await pool.wait_for_statements(1)
    second = asyncio.create_task(store(form(2)))
    await pool.wait_for_statements(2)
    third = asyncio.create_task(store(form(3)))  # two statements are out: it waits its turn

    with pytest.raises(Unavailable, match=r"within 0.1 s"):
        await third
    pool.give_connection()
    pool.verdict.set()

    assert (await first).event is not None and (await second).event is not None
    await asyncio.sleep(0.05)  # the turn the third would have had
    assert sorted(row["data"]["n"] for s in pool.statements for row in s) == [1, 2]
