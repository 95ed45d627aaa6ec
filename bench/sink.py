"""`python -m bench.sink`: the SMTP server the worker sends to during a benchmark.

    python -m bench.sink --records FILE --summary FILE [--host 127.0.0.1] [--port 0]

It prints `READY <port>` once listening. For every message it appends one line to the records
file: `<arrival time.time()>\\t<X-Flowline-Submission-Id>\\t<Message-ID>\\t<client port>`
(flushed every 50 ms, so the harness can follow it). Only the header block is looked at, with
two regular expressions: the sink must cost little next to what it measures. On SIGTERM it
writes `{"messages": n, "duplicates": d}` (d: messages whose Message-ID was seen before) to
the summary file and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from aiosmtpd.smtp import SMTP

from bench import loop
from dev.mailcatcher import advertise_pipelining

_SUBMISSION = re.compile(rb"^x-flowline-submission-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
FLUSH_SECONDS = 0.05


def header_block(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    if end < 0:
        end = content.find(b"\n\n")
    return content if end < 0 else content[:end]


def _first(pattern: re.Pattern[bytes], text: bytes) -> bytes:
    found = pattern.search(text)
    return found.group(1) if found else b"-"


class Recorder:
    """The aiosmtpd handler: one record line per message, duplicates counted by Message-ID."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._seen: set[bytes] = set()
        self.messages = 0
        self.duplicates = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        return advertise_pipelining(session, hostname, responses)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        arrived = time.time()
        content: bytes = envelope.original_content or envelope.content
        head = header_block(content)
        submission = _first(_SUBMISSION, head)
        message_id = _first(_MESSAGE_ID, head)
        self.messages += 1
        if message_id in self._seen:
            self.duplicates += 1
        self._seen.add(message_id)
        peer = session.peer
        port = peer[1] if isinstance(peer, tuple) and len(peer) > 1 else 0
        self._out.write(b"%.6f\t%s\t%s\t%d\n" % (arrived, submission, message_id, port))
        return "250 OK"


async def serve(host: str, port: int, out: BinaryIO) -> Recorder:
    """Receive until SIGTERM (or SIGINT); the recorder holds the counts."""
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(signum, stop.set)
    recorder = Recorder(out)

    def protocol() -> SMTP:
        return SMTP(recorder, hostname="flowline-bench-sink", decode_data=False, loop=running)

    server = await running.create_server(protocol, host, port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    while not stop.is_set():
        out.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FLUSH_SECONDS)
    server.close()
    return recorder


def main() -> None:
    parser = argparse.ArgumentParser(description="SMTP sink for the benchmark (bench/sink.py)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--summary", type=Path, required=True)
    args = parser.parse_args()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    with args.records.open("ab") as out:
        recorder = loop.run(serve(args.host, args.port, out))
    summary = {"messages": recorder.messages, "duplicates": recorder.duplicates}
    args.summary.write_bytes(orjson.dumps(summary))
    sys.exit(0)


if __name__ == "__main__":
    main()
