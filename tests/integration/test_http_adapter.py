"""The webhook HTTP adapter against a real receiver on 127.0.0.1 that misbehaves: whatever it
does, a call costs at most its `timeout` and a bounded amount of memory, and ends in a result
or in one of Flowline's errors."""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncIterator

import pytest

from tests.support.http_receiver import RECEIVER_HOST, Answer, HttpReceiver, http_receiver
from workflow_core.actions.base import HttpResponse
from workflow_core.adapters.http import EXCERPT_BYTES, HEAD_LIMIT_BYTES, HttpxClient
from workflow_core.destinations import AllowedHosts
from workflow_core.errors import RetryableActionError


@pytest.fixture
async def receiver() -> AsyncIterator[HttpReceiver]:
    async with http_receiver() as started:
        yield started


@pytest.fixture
async def client() -> AsyncIterator[HttpxClient]:
    created = HttpxClient(allowed=AllowedHosts.parse(RECEIVER_HOST))
    yield created
    await created.close()


async def call(client: HttpxClient, receiver: HttpReceiver, timeout: float) -> HttpResponse:
    return await client.request(
        "POST", f"{receiver.url}/hook", headers={}, content=b"{}", timeout=timeout
    )


async def test_a_head_trickled_one_line_a_second_times_out_after_the_whole_timeout(
    client: HttpxClient, receiver: HttpReceiver
) -> None:
    """Each line comes well within httpx's per-read timeout; only a bound on the whole call
    ends it (before, this held a handler for the two minutes the receiver keeps going)."""
    receiver.answer(Answer(trickle_seconds=1.0))
    started = time.monotonic()

    with pytest.raises(RetryableActionError, match=r"no complete answer within 2.5 s"):
        await call(client, receiver, timeout=2.5)

    elapsed = time.monotonic() - started
    assert 2.5 <= elapsed < 2.5 + 2.0, elapsed
    assert receiver.sent_bytes > len(b"HTTP/1.1 200 OK\r\n")  # it did trickle


async def test_an_endless_body_is_read_only_up_to_the_excerpt(
    client: HttpxClient, receiver: HttpReceiver
) -> None:
    receiver.answer(Answer(endless_body=b"x" * 4096))
    started = time.monotonic()

    response = await call(client, receiver, timeout=5.0)

    assert time.monotonic() - started < 2.0
    assert response.status == 200
    assert response.body_excerpt == "x" * EXCERPT_BYTES


async def test_an_endless_head_is_refused_past_its_limit_not_buffered(
    client: HttpxClient, receiver: HttpReceiver
) -> None:
    receiver.answer(Answer(endless_head=True))
    started = time.monotonic()

    with pytest.raises(RetryableActionError, match=r"the answer's head is larger than 100 KiB"):
        await call(client, receiver, timeout=10.0)

    assert time.monotonic() - started < 5.0  # refused, not timed out
    # What the client read before refusing, plus what the sockets' buffers held.
    assert receiver.sent_bytes < HEAD_LIMIT_BYTES + 16 * 1024 * 1024


async def test_a_compressed_answer_is_not_expanded(
    client: HttpxClient, receiver: HttpReceiver
) -> None:
    """A body that would inflate a thousandfold is shown as what it is, not decoded."""
    bomb = zlib.compressobj(wbits=31)
    body = bomb.compress(b"\0" * 16 * 1024 * 1024) + bomb.flush()
    receiver.answer(Answer(200, body, {"content-encoding": "gzip"}))

    response = await call(client, receiver, timeout=5.0)

    assert response.status == 200
    assert "gzip-encoded: not shown" in response.body_excerpt
    [request] = receiver.received
    assert request.headers["accept-encoding"] == "identity"


async def test_a_well_behaved_answer_is_unchanged(
    client: HttpxClient, receiver: HttpReceiver
) -> None:
    receiver.answer(Answer(201, b'{"id": 7}', {"x-request-id": "r-1"}))

    response = await call(client, receiver, timeout=5.0)

    assert response.status == 201
    assert response.body_excerpt == '{"id": 7}'
    assert response.headers["x-request-id"] == "r-1"


async def test_a_json_answer_is_read_whole_up_to_the_cap_and_no_further(
    receiver: HttpReceiver,
) -> None:
    big = b'{"items": [' + b",".join(b"%d" % n for n in range(2000)) + b"]}"
    assert EXCERPT_BYTES < len(big) < 10_000
    client = HttpxClient(allowed=AllowedHosts.parse(RECEIVER_HOST), json_max_bytes=10_000)
    try:
        receiver.answer(Answer(200, big))
        whole = await call(client, receiver, timeout=5.0)
        receiver.answer(Answer(200, big + b" " * 10_000))
        over = await call(client, receiver, timeout=5.0)
        receiver.answer(Answer(200, big, {"content-type": "text/plain"}))
        text = await call(client, receiver, timeout=5.0)
    finally:
        await client.close()

    assert whole.body == big
    assert len(whole.body_excerpt) == EXCERPT_BYTES
    assert (over.body, over.body_excerpt) == (None, whole.body_excerpt)  # past the cap
    assert text.body is None  # only a JSON answer is kept whole
