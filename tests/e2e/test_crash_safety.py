"""Crash safety with real processes: a worker killed with SIGKILL in the middle of a burst loses
no event, and sends an email twice only if it died between the server's 250 and the record of
that email (CONTRACT §5), once another worker takes over."""

from __future__ import annotations

import asyncio
import collections
import signal
import time

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Stack
from tests.support.examples import EXAMPLE_WORKFLOW, example_form
from tests.support.flows import submit
from tests.support.smtp import SmtpServer, duplicates_outside_the_window
from tests.support.waiting import eventually
from workflow_core import events
from workflow_core.adapters.streams import StreamKeys
from workflow_core.persistence.tables import outbox, runs, submissions

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


async def _submit_all(client: httpx.AsyncClient, count: int, parallel: int = 16) -> list[str]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    accepted: list[str] = []

    async def sender() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            response = await client.post("/submit", json=example_form(email=f"user{n}@example.com"))
            assert response.status_code == 202, response.text
            accepted.append(response.json()["submission_id"])

    await asyncio.gather(*(sender() for _ in range(parallel)))
    return accepted


QUICK = {
    "CLAIM_IDLE_SECONDS": 1,
    "CLAIM_INTERVAL_SECONDS": 0.3,
    "SMTP_TIMEOUT_SECONDS": 2,
    "WORKER_HEARTBEAT_SECONDS": 0.5,
    "WORKER_DEAD_AFTER_SECONDS": 2,
}
# How long before its sender died a repeated email's first 250 may have been given: the
# window between reading a 250 and committing its record, under full load (the worker's event
# loop is busy, so it reads a reply a few milliseconds after it came).
DUPLICATE_WINDOW_SECONDS = 0.5


async def test_sigkill_mid_burst_loses_nothing_and_repeats_only_what_was_in_the_window(
    stack: Stack, smtp: SmtpServer, engine: AsyncEngine
) -> None:
    total = 1000
    stack.start_api(submit_rate_per_org=0)  # a thousand forms of one organisation at once
    first = stack.start_worker("worker-a", **QUICK)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
        submitting = asyncio.create_task(_submit_all(client, total))
        await eventually(lambda: len(smtp.received) >= 150, timeout=60, what="150 emails")
        kill_sent = time.time()
        first.signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        killed = (kill_sent, time.time())
        killed_at = len(smtp.received)
        stack.start_worker("worker-b", **QUICK)
        accepted = await submitting
    assert len(accepted) == total

    try:
        await eventually(
            lambda: len({r.rcpt_tos[0] for r in smtp.received}) >= total,
            timeout=90,
            what=f"{total} emails (killed after {killed_at})",
        )
    except AssertionError:
        await _explain_missing(engine, smtp, total)
        raise

    async def finished() -> bool:
        async with engine.connect() as conn:
            query = select(func.count()).select_from(runs).where(runs.c.status == "completed")
            return int((await conn.execute(query)).scalar_one()) == total

    await eventually(finished, timeout=30, what="every run completed")
    per_recipient = collections.Counter(r.rcpt_tos[0] for r in smtp.received)
    duplicates = {address: n for address, n in per_recipient.items() if n > 1}
    lost = {f"user{n}@example.com" for n in range(total)} - set(per_recipient)
    print(
        f"\nsubmitted={total} delivered={len(per_recipient)} duplicated={len(duplicates)} "
        f"lost={len(lost)} killed_after={killed_at}"
    )
    assert not lost, stack.logs()
    outside = duplicates_outside_the_window(smtp.received, killed, DUPLICATE_WINDOW_SECONDS)
    assert not outside, (outside, stack.logs())


async def test_sigterm_finishes_in_flight_work_and_exits_zero(
    stack: Stack, smtp: SmtpServer
) -> None:
    """SIGTERM while the SMTP server is slow: the worker stops reading, finishes the emails it
    is sending, exits 0; nothing is lost and nothing repeats when the next worker starts."""
    smtp.behaviour.data_delay = 0.3
    stack.start_api()
    worker = stack.start_worker(
        "worker-a",
        CLAIM_IDLE_SECONDS=1,
        CLAIM_INTERVAL_SECONDS=0.3,
        SMTP_TIMEOUT_SECONDS=2,
        LOG_LEVEL="INFO",
    )
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
        await _submit_all(client, 60)
        await eventually(lambda: len(smtp.received) >= 5, timeout=30, what="the first emails")
        worker.signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.process.wait, 15)
    assert code == 0, worker.log()[-3000:]
    assert "worker_stopped" in worker.log()
    stack.start_worker(
        "worker-b", CLAIM_IDLE_SECONDS=1, CLAIM_INTERVAL_SECONDS=0.3, SMTP_TIMEOUT_SECONDS=2
    )
    await eventually(lambda: len(smtp.received) >= 60, timeout=60, what="all 60 emails")
    per_recipient = collections.Counter(r.rcpt_tos[0] for r in smtp.received)
    assert len(per_recipient) == 60 and max(per_recipient.values()) == 1


async def _explain_missing(engine: AsyncEngine, smtp: SmtpServer, total: int) -> None:
    """On failure: what the database says about the emails that never arrived."""
    from sqlalchemy import text

    got = {r.rcpt_tos[0] for r in smtp.received}
    missing = [f"user{n}@example.com" for n in range(total) if f"user{n}@example.com" not in got]
    async with engine.connect() as conn:
        for address in missing[:5]:
            rows = (
                await conn.execute(
                    text(
                        "SELECT r.status, r.deliveries, e.state, a.status AS action, a.result "
                        "FROM runs r JOIN submissions s ON s.id = r.submission_id "
                        "LEFT JOIN effects e ON e.run_id = r.id "
                        "LEFT JOIN run_actions a ON a.run_id = r.id "
                        "WHERE s.data->>'email' = :email"
                    ),
                    {"email": address},
                )
            ).all()
            print("MISSING", address, rows)


async def test_sigterm_on_the_api_finishes_requests_publishes_its_outbox_and_exits_zero(
    stack: Stack, engine: AsyncEngine, redis: aioredis.Redis, keys: StreamKeys
) -> None:
    """SIGTERM while forms arrive: the requests in flight get their answer, the API stops
    accepting, publishes what its outbox still holds (here an event the fast path never saw,
    well within the relay's grace period) and exits 0."""
    api = stack.start_api(OUTBOX_GRACE_SECONDS=60)
    _, missed_event = await submit(engine, {"email": "missed@example.com"})  # outbox only
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        sending = asyncio.create_task(_submit_all(client, 40, parallel=8))
        await asyncio.sleep(0.05)
        api.signal(signal.SIGTERM)
        accepted = await asyncio.gather(sending, return_exceptions=True)
        code = await asyncio.to_thread(api.process.wait, 15)
        with pytest.raises(httpx.TransportError):
            await client.get("/healthz")

    assert code == 0, api.log()[-3000:]
    published = {
        events.from_fields(fields).event_id for _, fields in await redis.xrange(keys.stream)
    }
    assert missed_event in published
    async with engine.connect() as conn:
        stored = (await conn.execute(select(func.count()).select_from(submissions))).scalar()
        waiting = (
            await conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
            )
        ).scalar()
    assert waiting == 0 and len(published) == stored  # every stored form's event went out
    if isinstance(accepted[0], list):  # all 40 were answered before the API stopped
        assert len(accepted[0]) == 40
