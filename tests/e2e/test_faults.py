"""Delivery guarantees under faults, with real processes and real services (CONTRACT §5):
a worker killed mid-delivery against a slow SMTP server, SMTP down for 20 s, Redis stopped and
started again, PostgreSQL cut off from the API, poison events and their replay.

Each test prints its figures: submitted, delivered, duplicated, lost."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Stack
from tests.e2e.conftest import ProxiedDatabase
from tests.support.examples import EXAMPLE_WORKFLOW, example_form
from tests.support.redis_server import RedisServer
from tests.support.smtp import SmtpServer, duplicates_outside_the_window
from tests.support.waiting import eventually
from workflow_core import events
from workflow_core.ids import new_id
from workflow_core.persistence.tables import run_actions, runs, submissions

pytestmark = [pytest.mark.e2e, pytest.mark.faults]
# Quick takeover after a crash: idle entries after 1 s, a dead worker's emails after 2 s.
FAST = {
    "CLAIM_IDLE_SECONDS": 1,
    "CLAIM_INTERVAL_SECONDS": 0.3,
    "SMTP_TIMEOUT_SECONDS": 2,
    "WORKER_HEARTBEAT_SECONDS": 0.5,
    "WORKER_DEAD_AFTER_SECONDS": 2,
}


async def submit_many(
    client: httpx.AsyncClient, count: int, parallel: int = 8, prefix: str = "user"
) -> list[str]:
    numbers = iter(range(count))
    accepted: list[str] = []

    async def sender() -> None:
        for n in numbers:
            response = await client.post(
                "/submit", json=example_form(email=f"{prefix}{n}@example.com")
            )
            assert response.status_code == 202, response.text
            accepted.append(response.json()["submission_id"])

    await asyncio.gather(*(sender() for _ in range(parallel)))
    return accepted


def tally(smtp: SmtpServer, count: int, prefix: str = "user") -> tuple[int, int, int]:
    """(delivered, duplicated, lost) by recipient."""
    per_recipient = collections.Counter(r.rcpt_tos[0] for r in smtp.received)
    expected = {f"{prefix}{n}@example.com" for n in range(count)}
    duplicated = sum(1 for address, n in per_recipient.items() if n > 1)
    return len(set(per_recipient) & expected), duplicated, len(expected - set(per_recipient))


def report(name: str, submitted: int, smtp: SmtpServer) -> tuple[int, int, int]:
    delivered, duplicated, lost = tally(smtp, submitted)
    print(
        f"\n[{name}] submitted={submitted} delivered={delivered} duplicated={duplicated} "
        f"lost={lost}"
    )
    return delivered, duplicated, lost


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        yield client


async def test_sigkill_with_200_in_flight_against_a_slow_smtp_server(
    stack: Stack, smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    """The server takes 0.25 s to judge each message and keeps it only if its 250 reaches the
    client (RFC 5321). Killed mid-way, the worker loses none: what it had in judgement is sent
    again. A repeat is allowed only for an email whose 250 came just before the kill."""
    smtp.behaviour.data_delay = 0.25
    smtp.behaviour.accept_at_reply = True
    stack.start_api()
    victim = stack.start_worker("victim", **FAST)
    assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
    await submit_many(client, 200, parallel=16)
    await eventually(lambda: len(smtp.received) >= 30, timeout=30, what="30 emails")
    kill_sent = time.time()
    victim.kill()  # SIGKILL, then waits for the process to be gone
    killed = (kill_sent, time.time())
    stack.start_worker("survivor", **FAST)
    await eventually(lambda: tally(smtp, 200)[0] == 200, timeout=60, what="200 emails")
    await asyncio.sleep(2 * FAST["CLAIM_IDLE_SECONDS"])  # room for a wrong redelivery to show
    delivered, _, lost = report("sigkill+slow smtp", 200, smtp)
    assert (delivered, lost) == (200, 0), stack.logs()
    assert not duplicates_outside_the_window(smtp.received, killed, 0.5), stack.logs()


async def test_smtp_down_for_20_seconds(
    stack: Stack, smtp: SmtpServer, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    stack.start_api()
    stack.start_worker(
        "worker",
        ACTION_MAX_ATTEMPTS=60,
        ACTION_RETRY_INITIAL_SECONDS=0.5,
        ACTION_RETRY_MAX_SECONDS=2,
        **FAST,
    )
    assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
    await submit_many(client, 30)
    await eventually(lambda: len(smtp.received) >= 10, timeout=30, what="the first emails")
    smtp.stop()
    outage = time.monotonic()
    await submit_many(client, 70, prefix="later")
    await asyncio.sleep(max(0.0, 20 - (time.monotonic() - outage)))  # the outage itself
    smtp.start()
    later = [f"later{n}@example.com" for n in range(70)]
    expected = later + [f"user{n}@example.com" for n in range(30)]

    def missing() -> list[str]:
        return [address for address in expected if not smtp.to(address)]

    await eventually(lambda: not missing(), timeout=40, what="every email after the outage")
    delivered, duplicated, lost = tally(smtp, 30)
    later_counts = collections.Counter(
        r.rcpt_tos[0] for r in smtp.received if r.rcpt_tos[0] in later
    )
    print(
        f"\n[smtp down 20 s] submitted=100 delivered={delivered + len(later_counts)} "
        f"duplicated={duplicated + sum(1 for n in later_counts.values() if n > 1)} "
        f"lost={lost + 70 - len(later_counts)}"
    )
    assert (delivered, duplicated, lost) == (30, 0, 0)
    assert len(later_counts) == 70 and max(later_counts.values()) == 1
    async with engine.connect() as conn:
        retried = (
            await conn.execute(
                select(func.count())
                .select_from(run_actions)
                .where(run_actions.c.status == "retrying")
            )
        ).scalar()
        completed = (
            await conn.execute(
                select(func.count()).select_from(runs).where(runs.c.status == "completed")
            )
        ).scalar()
    assert retried and retried >= 70  # every email sent during the outage was retried
    assert completed == 100


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if not RedisServer.available():
        pytest.skip("redis-server is not installed here")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


async def test_redis_stopped_and_started_again(
    stack: Stack, smtp: SmtpServer, client: httpx.AsyncClient, own_redis: RedisServer
) -> None:
    stack.start_api(REDIS_PORT=own_redis.port)
    stack.start_worker("worker", REDIS_PORT=own_redis.port, **FAST)
    assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
    await submit_many(client, 40)
    own_redis.stop()
    await submit_many(client, 40, prefix="during")  # still 202: the outbox holds them
    await asyncio.sleep(3)
    own_redis.start()
    await submit_many(client, 40, prefix="after")
    for prefix in ("user", "during", "after"):
        await eventually(
            lambda p=prefix: tally(smtp, 40, p)[0] == 40,
            timeout=60,  # type: ignore[misc]
            what=f"the {prefix} emails",
        )
    figures = [tally(smtp, 40, prefix) for prefix in ("user", "during", "after")]
    print(
        f"\n[redis restart] submitted=120 delivered={sum(f[0] for f in figures)} "
        f"duplicated={sum(f[1] for f in figures)} lost={sum(f[2] for f in figures)}"
    )
    assert figures == [(40, 0, 0)] * 3, stack.logs()


async def test_postgres_cut_off_from_the_api_gives_503_then_recovers(
    proxied_database: ProxiedDatabase, stack: Stack, client: httpx.AsyncClient
) -> None:
    # The proxy first, so it is torn down last: the processes stop while it still forwards.
    proxy = proxied_database.proxy
    stack.start_api(DATABASE_URL=proxied_database.url)
    assert (await client.post("/submit", json=example_form())).status_code == 202

    proxy.cut()
    await asyncio.sleep(0.2)  # the cut happens on the proxy's own thread
    for _ in range(3):
        started = time.monotonic()
        response = await client.post("/submit", json=example_form())
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert "database" in response.json()["detail"]
        assert elapsed < 1.5, f"503 took {elapsed:.2f} s"
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("down")
    assert ready.json()["checks"]["redis"] == "ok"

    proxy.restore()

    async def accepted() -> bool:
        return (await client.post("/submit", json=example_form())).status_code == 202

    await eventually(accepted, timeout=15, what="/submit to work again")
    assert (await client.get("/readyz")).status_code == 200


async def test_postgres_cut_off_from_a_worker_pauses_it_and_it_resumes(
    proxied_database: ProxiedDatabase,  # first, so torn down last: see the test above
    stack: Stack,
    smtp: SmtpServer,
    client: httpx.AsyncClient,
    redis: aioredis.Redis,
    keys: Any,
) -> None:
    """The worker's database goes away while events keep arriving (the API still reaches its
    own): the worker takes nothing it cannot finish, counts no delivery, dead-letters nothing,
    and once the database is back every email goes out once."""
    proxy = proxied_database.proxy
    stack.start_api()
    assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
    stack.start_worker(DATABASE_URL=proxied_database.url, DELIVERY_LIMIT=2, **FAST)
    await submit_many(client, 1, prefix="before")
    await eventually(lambda: smtp.received, timeout=30, what="the first email")

    proxy.cut()
    await asyncio.sleep(0.2)  # the cut happens on the proxy's own thread
    await submit_many(client, 20)
    await asyncio.sleep(6)  # longer than CLAIM_IDLE_SECONDS x DELIVERY_LIMIT
    assert len(smtp.received) == 1  # nothing could be recorded, so nothing was sent
    assert await redis.xlen(keys.dead) == 0

    proxy.restore()
    await eventually(lambda: len(smtp.received) >= 21, timeout=40, what="every email")
    await asyncio.sleep(1)  # time for a duplicate to show
    delivered, duplicated, lost = report("postgres cut from the worker", 20, smtp)
    assert (delivered, duplicated, lost) == (20, 0, 0), stack.logs()
    assert await redis.xlen(keys.dead) == 0


async def test_a_poison_event_is_dead_lettered_and_can_be_replayed(
    stack: Stack,
    smtp: SmtpServer,
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: aioredis.Redis,
    keys: Any,
) -> None:
    """An event for a submission the database does not have (restored from elsewhere, say)
    fails on every delivery; after DELIVERY_LIMIT it is a dead letter. Once the submission is
    there, a replay delivers it."""
    stack.start_api(DEAD_LETTER_REPLAY_LIMIT=2)
    stack.start_worker("worker", DELIVERY_LIMIT=3, **FAST)
    assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
    submission_id = uuid.uuid4()
    now = datetime.now(UTC)
    form = example_form(email="poison@example.com")
    event = events.form_submitted(
        new_id(), submission_id, form["template_id"], form["org_id"], form["data"], now
    )
    await redis.xadd(keys.stream, event.to_fields())
    malformed_id = await redis.xadd(keys.stream, {"type": "form_submitted", "payload": "{"})

    async def dead() -> list[dict[str, Any]]:
        letters = (await client.get("/dead-letters")).json()
        return letters if len(letters) == 2 else []

    letters = await eventually(dead, timeout=30, what="two dead letters")
    by_original = {letter["original_id"]: letter for letter in letters}
    malformed = by_original.pop(malformed_id)
    assert "malformed" in malformed["error"]
    [poison] = by_original.values()
    assert poison["deliveries"] == 3 and poison["event_id"] == str(event.event_id)
    assert "ForeignKeyViolation" in poison["error"] or "foreign key" in poison["error"]
    assert (await client.post(f"/dead-letters/{malformed['id']}/replay")).status_code == 409

    async with engine.begin() as conn:  # the operator puts the submission back
        await conn.execute(
            insert(submissions).values(
                id=submission_id,
                template_id=form["template_id"],
                org_id=form["org_id"],
                data=form["data"],
                created_at=now,
            )
        )
    replayed = await client.post(f"/dead-letters/{poison['id']}/replay")
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["replays"] == 1
    await eventually(lambda: smtp.to("poison@example.com"), timeout=20, what="the replayed email")
    assert (await client.post(f"/dead-letters/{poison['id']}/replay")).status_code == 202
    again = await client.post(f"/dead-letters/{poison['id']}/replay")
    assert again.status_code == 409 and "replayed 2 times" in again.json()["detail"]
    listed = {d["id"]: d for d in (await client.get("/dead-letters")).json()}
    assert listed[poison["id"]]["replays"] == 2
    await asyncio.sleep(1)  # the second replay finds the run done: nothing more is sent
    assert len(smtp.to("poison@example.com")) == 1


async def test_a_resume_that_breaks_its_run_fails_it_and_the_run_can_be_retried(
    stack: Stack,
    smtp: SmtpServer,
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: aioredis.Redis,
    keys: Any,
) -> None:
    stack.start_api()
    stack.start_worker("worker", DELIVERY_LIMIT=2, **FAST)
    definition = {
        "trigger": {"type": "form_submitted"},
        "initial_step_id": "review",
        "steps": [
            {
                "id": "review",
                "name": "Review",
                "type": "human_task",
                "transitions": [{"to": "tell"}],
            },
            {
                "id": "tell",
                "type": "auto_action",
                "actions": [
                    {
                        "type": "send_email",
                        "config": {
                            "to_path": "data.email",
                            "subject": "done",
                            "body": "{task.outcome}",
                        },
                    }
                ],
            },
        ],
    }
    assert (
        await client.post("/workflows", json={"name": "w", "definition": definition})
    ).status_code == 201
    submission = (await client.post("/submit", json=example_form(email="r@example.com"))).json()

    async def the_run(status: str) -> dict[str, Any] | None:
        found = (await client.get(f"/submissions/{submission['submission_id']}")).json()["runs"]
        return found[0] if found and found[0]["status"] == status else None

    run = await eventually(lambda: the_run("waiting"), what="the run to wait")
    broken = events.run_resume(
        new_id(), uuid.UUID(run["id"]), "task", task_id="not-a-uuid", step_seq=1
    )
    await redis.xadd(keys.stream, broken.to_fields())
    failed = await eventually(lambda: the_run("failed"), timeout=30, what="the run to fail")
    # The run's own failure: recorded with the reason at once, the event not dead-lettered.
    assert "ValueError" in failed["error"]
    assert (await client.get("/dead-letters")).json() == []

    retried = await client.post(f"/runs/{run['id']}/retry")
    assert retried.status_code == 202 and retried.json()["step_id"] == "review"
    await eventually(lambda: the_run("waiting"), what="the retried run to wait again")
    [task] = (await client.get("/tasks", params={"run_id": run["id"]})).json()
    done = await client.post(f"/tasks/{task['id']}/complete", json={"outcome": "approved"})
    assert done.status_code == 200, done.text
    [mail] = await eventually(lambda: smtp.to("r@example.com"), what="the final email")
    assert "approved" in mail.message.get_content()
    assert (await client.post(f"/runs/{run['id']}/retry")).status_code == 409
    history = (await client.get(f"/runs/{run['id']}")).json()
    assert history["status"] == "completed"
