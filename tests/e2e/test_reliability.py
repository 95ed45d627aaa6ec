"""The promises of CONTRACT §5 against peers that misbehave the way real ones do, with the API
and workers as processes: an SMTP server that answers the end of DATA late while its worker is
killed, a worker restarted under its own name with a slow webhook in its pending list, and a
Redis that comes back without its data.

Each test prints its figures: submitted, delivered, duplicated, lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from tests.conftest import Stack
from tests.e2e.conftest import ProxiedDatabase
from tests.e2e.test_faults import report, submit_many, tally
from tests.support.examples import EXAMPLE_WORKFLOW, email_step, example_form, unique_email
from tests.support.http_receiver import Answer, http_receiver
from tests.support.redis_server import RedisServer
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

# A dead worker is noticed fast: its heartbeat is old after 2 s, its entries idle after 1 s.
QUICK = {
    "WORKER_HEARTBEAT_SECONDS": 0.5,
    "WORKER_DEAD_AFTER_SECONDS": 2,
    "CLAIM_IDLE_SECONDS": 1,
    "CLAIM_INTERVAL_SECONDS": 0.3,
    "SMTP_TIMEOUT_SECONDS": 1,
}


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        yield client


async def test_sigkill_while_the_server_judges_the_content_loses_no_email(
    stack: Stack, smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    """The server takes 3 s to answer the end of DATA and keeps a message only if its 250
    reaches the client (RFC 5321). The worker is killed a second into that wait: the emails in
    flight were not taken, and the next worker sends them, each once, with its Message-ID."""
    smtp.behaviour.data_delay = 3.0
    smtp.behaviour.accept_at_reply = True
    stack.start_api()
    victim = stack.start_worker("victim", **QUICK)
    assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
    await submit_many(client, 20)
    await eventually(lambda: smtp.handler.judging > 0, timeout=30, what="an email in judgement")
    await asyncio.sleep(1.0)
    in_flight = smtp.handler.judging
    victim.kill()
    stack.start_worker("survivor", **QUICK)
    await eventually(lambda: tally(smtp, 20)[0] == 20, timeout=90, what="20 emails")
    await asyncio.sleep(3)  # room for a wrong repeat to show
    print(f"\n[sigkill in judgement] in flight when killed: {in_flight}")
    assert in_flight > 0
    assert report("sigkill during a slow final reply", 20, smtp) == (20, 0, 0), stack.logs()


@pytest.mark.parametrize("accept_at_reply", [False, True], ids=["queues-at-dot", "at-reply"])
async def test_a_final_reply_slower_than_the_command_timeout_delivers_each_email_once(
    stack: Stack, smtp: SmtpServer, client: httpx.AsyncClient, accept_at_reply: bool
) -> None:
    """A server that answers the end of DATA after 3 s, three times SMTP_TIMEOUT_SECONDS:
    whether it keeps the message at the dot or at its reply, every email arrives once (the
    client waits SMTP_DATA_TIMEOUT_SECONDS for that reply, not the command timeout)."""
    smtp.behaviour.data_delay = 3.0
    smtp.behaviour.accept_at_reply = accept_at_reply
    stack.start_api()
    stack.start_worker("worker", **QUICK)
    assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
    await submit_many(client, 5)
    await eventually(lambda: tally(smtp, 5)[0] == 5, timeout=60, what="5 emails")
    await asyncio.sleep(4)  # a second attempt would need another 3 s
    assert report("slow final reply", 5, smtp) == (5, 0, 0), stack.logs()


SLOW_HOOK_TEMPLATE = "slow_hook"


def slow_hook_workflow(url: str) -> dict[str, object]:
    return {
        "name": "slow receiver",
        "definition": {
            "trigger": {
                "type": "form_submitted",
                "conditions": {"path": "template_id", "op": "==", "value": SLOW_HOOK_TEMPLATE},
            },
            "initial_step_id": "call",
            "steps": [
                {
                    "id": "call",
                    "type": "auto_action",
                    "actions": [
                        {"type": "webhook", "config": {"url": f"{url}/slow", "timeout": 20}}
                    ],
                }
            ],
        },
    }


async def test_a_worker_restarted_under_its_name_takes_new_events_while_a_slow_one_is_pending(
    stack: Stack, smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    """A container restart keeps its consumer name. Its pending list holds an event whose
    webhook hangs: the new life works on it once, and goes on to new events meanwhile (it once
    read its history from `0` again and again: 82 deliveries, and new forms waited)."""
    async with http_receiver() as receiver:
        receiver.answer(Answer(hang=True), times=100)
        stack.start_api()
        same = {"WORKER_CONSUMER_NAME": "same-name", **QUICK, "CLAIM_IDLE_SECONDS": 3600}
        first = stack.start_worker("first-life", **same)
        for workflow in (EXAMPLE_WORKFLOW, slow_hook_workflow(receiver.url)):
            assert (await client.post("/workflows", json=workflow)).status_code == 201
        slow = example_form()
        slow["template_id"] = SLOW_HOOK_TEMPLATE
        assert (await client.post("/submit", json=slow)).status_code == 202
        await eventually(lambda: len(receiver.received) == 1, timeout=30, what="the slow call")
        first.kill()

        stack.start_worker("second-life", **same)
        await eventually(lambda: len(receiver.received) == 2, timeout=30, what="the call again")
        address = unique_email()
        started = time.monotonic()
        response = await client.post("/submit", json=example_form(email=address))
        assert response.status_code == 202
        await eventually(lambda: smtp.to(address), timeout=15, what="the new form's email")
        waited = time.monotonic() - started
        await asyncio.sleep(2)
        calls = len(receiver.received)
    print(f"\n[restart under the same name] new email after {waited:.2f} s, slow calls: {calls}")
    assert calls == 2, stack.logs()  # one per life of the worker, no re-reads


@pytest.fixture
def forgetful_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if not RedisServer.available():
        pytest.skip("redis-server is not installed here")
    server = RedisServer(tmp_path, persistent=False).start()
    yield server
    server.stop()


async def _published(client: httpx.AsyncClient, submission_id: str) -> bool:
    found = (await client.get(f"/submissions/{submission_id}")).json()
    return found.get("published_at") is not None


async def test_redis_restarted_empty_loses_no_accepted_submission(
    stack: Stack, smtp: SmtpServer, client: httpx.AsyncClient, forgetful_redis: RedisServer
) -> None:
    """Five forms accepted and published while no worker runs; Redis restarts without its
    data (no persistence, or a failover). The outbox knows they were never taken: published
    again, each email arrives once. Then, with the worker running, Redis loses everything
    once more: the worker recreates its group and five more forms arrive too."""
    redis_port = {"REDIS_PORT": forgetful_redis.port}
    sweep = {"EVENT_RECONCILE_SECONDS": 2}
    stack.start_api(**redis_port, **sweep)
    assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
    accepted = await submit_many(client, 5)
    for submission_id in accepted:
        await eventually(
            lambda s=submission_id: _published(client, s),  # type: ignore[misc]
            timeout=15,
            what="published",
        )
    forgetful_redis.restart_empty()
    worker = stack.start_worker("worker", **redis_port, **sweep, **QUICK)
    await eventually(lambda: tally(smtp, 5)[0] == 5, timeout=60, what="the 5 emails")

    forgetful_redis.restart_empty()
    await submit_many(client, 5, prefix="later")
    await eventually(lambda: tally(smtp, 5, "later")[0] == 5, timeout=60, what="5 more emails")
    await asyncio.sleep(3)  # a repeat from the sweep would show now
    assert report("redis restarted empty", 5, smtp) == (5, 0, 0), stack.logs()
    assert tally(smtp, 5, "later") == (5, 0, 0), stack.logs()
    assert "redis_lost_its_data" in worker.log()


async def test_redis_restarted_empty_loses_no_accepted_event(
    stack: Stack, smtp: SmtpServer, client: httpx.AsyncClient, forgetful_redis: RedisServer
) -> None:
    """POST /events keeps the promise of /submit: three events accepted and published while
    no worker runs, then Redis restarts without its data. The outbox knows they were never
    taken: published again, each starts its run and its email arrives once."""
    redis_port = {"REDIS_PORT": forgetful_redis.port}
    sweep = {"EVENT_RECONCILE_SECONDS": 2}
    stack.start_api(**redis_port, **sweep)
    thanks = {
        "name": "Thank for a paid order",
        "definition": {
            "trigger": {"type": "order.paid"},
            "initial_step_id": "thank",
            "steps": [email_step("thank", "Paid", body="x")],
        },
    }
    assert (await client.post("/workflows", json=thanks)).status_code == 201
    buyers = [unique_email() for _ in range(3)]
    for buyer in buyers:
        event = {"type": "order.paid", "data": {"email": buyer}, "org_id": "org_123"}
        assert (await client.post("/events", json=event)).status_code == 202
    stream = aioredis.Redis(host="127.0.0.1", port=int(forgetful_redis.port))
    try:
        name = stack.settings.redis_stream_name
        await eventually(lambda: _length_is(stream, name, 3), timeout=15, what="published")
    finally:
        await stream.aclose()
    forgetful_redis.restart_empty()
    stack.start_worker("worker", **redis_port, **sweep, **QUICK)
    for buyer in buyers:
        await eventually(lambda b=buyer: smtp.to(b), timeout=60, what=f"the email to {buyer}")  # type: ignore[misc]
    await asyncio.sleep(3)  # a repeat from the sweep would show now
    assert [len(smtp.to(buyer)) for buyer in buyers] == [1, 1, 1], stack.logs()


async def _length_is(stream: aioredis.Redis, name: str, length: int) -> bool:
    return bool(await stream.xlen(name) == length)


async def test_a_250_noted_while_postgres_is_cut_survives_redis_emptied_and_a_kill(
    proxied_database: ProxiedDatabase,  # first, so torn down last (test_faults.py)
    stack: Stack,
    smtp: SmtpServer,
    client: httpx.AsyncClient,
    forgetful_redis: RedisServer,
    tmp_path: Path,
) -> None:
    """Three faults within seconds, as the chaos soak once drew them: the server answers the
    end of DATA while PostgreSQL is cut off from the worker, so those 250s cannot be recorded;
    Redis, where they are noted, restarts empty; the worker is killed before either is back.
    Its local spool (WORKER_SPOOL_DIR) still holds them: the next worker records them done
    and sends none of them again, and every other email arrives once."""
    smtp.behaviour.data_delay = 2.0
    smtp.behaviour.accept_at_reply = True  # kept only if its 250 reached the worker
    same = {
        "REDIS_PORT": forgetful_redis.port,
        "EVENT_RECONCILE_SECONDS": 2,
        "WORKER_SPOOL_DIR": str(tmp_path / "spool"),
        **QUICK,
    }
    stack.start_api(REDIS_PORT=forgetful_redis.port, EVENT_RECONCILE_SECONDS=2)
    assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
    victim = stack.start_worker("victim", DATABASE_URL=proxied_database.url, **same)
    await submit_many(client, 10)
    await eventually(lambda: smtp.handler.judging > 0, timeout=30, what="an email in judgement")
    before_cut = len(smtp.received)
    proxied_database.proxy.cut()
    await eventually(lambda: smtp.handler.judging == 0, timeout=30, what="the 250s")
    await asyncio.sleep(0.5)  # the records fail; the 250s are noted
    answered_in_the_cut = len(smtp.received) - before_cut
    forgetful_redis.restart_empty()
    victim.kill()
    proxied_database.proxy.restore()

    survivor = stack.start_worker("survivor", **same)
    await eventually(lambda: tally(smtp, 10)[0] == 10, timeout=90, what="10 emails")
    await asyncio.sleep(3)  # room for a wrong repeat to show
    print(f"\n[250 in a cut, Redis emptied, kill] answered in the cut: {answered_in_the_cut}")
    assert answered_in_the_cut > 0
    assert report("250 in a cut, Redis emptied, kill", 10, smtp) == (10, 0, 0), stack.logs()
    assert "sent_emails_recovered_from_spool" in survivor.log(), stack.logs()
