"""The chaos soak's SMTP sink (chaos/sink.py), in its own process as the soak runs it: a
message counts as delivered only when its final 250 went to a connection still open
(RFC 5321); a client that left while the sink sat on the final dot, or a connection the sink
dropped mid-DATA, delivered nothing."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chaos.sink import CLIENT_LEFT, DELIVERED, DROPPED, SmtpSink


def message(n: int) -> bytes:
    return (
        f"Message-ID: <m{n}@chaos.test>\r\nX-Flowline-Submission-Id: s{n}\r\n"
        f"Subject: {n}\r\n\r\nbody\r\n"
    ).encode()


def send(port: int, n: int, timeout: float = 10.0) -> str:
    """Send message n; "ok" or the error the client saw."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
            client.sendmail("flowline@chaos.test", [f"r{n}@chaos.test"], message(n))
    except (smtplib.SMTPException, OSError) as error:
        return type(error).__name__
    return "ok"


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[SmtpSink]:
    started = SmtpSink(tmp_path, seed=1)
    await started.start()
    yield started
    await started.stop()


async def outcomes(sink: SmtpSink) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for record in sink.records():
        found.setdefault(record.message_id, []).append(record.outcome)
    return found


async def test_a_message_counts_only_once_its_250_reached_a_client_still_there(
    sink: SmtpSink,
) -> None:
    assert await asyncio.to_thread(send, sink.port, 1) == "ok"
    await sink.set_mode("slow 1.5 1.5")
    assert await asyncio.to_thread(send, sink.port, 2) == "ok"  # a patient client
    assert await asyncio.to_thread(send, sink.port, 3, 0.5) != "ok"  # gone before the 250
    await asyncio.sleep(1.5)
    await sink.set_mode("drop")
    assert await asyncio.to_thread(send, sink.port, 4) != "ok"
    await sink.set_mode("ok")
    assert await asyncio.to_thread(send, sink.port, 5) == "ok"

    assert await outcomes(sink) == {
        "<m1@chaos.test>": [DELIVERED],
        "<m2@chaos.test>": [DELIVERED],
        "<m3@chaos.test>": [CLIENT_LEFT],
        "<m4@chaos.test>": [DROPPED],
        "<m5@chaos.test>": [DELIVERED],
    }
    assert sink.delivered_recipients() == {"r1@chaos.test", "r2@chaos.test", "r5@chaos.test"}
