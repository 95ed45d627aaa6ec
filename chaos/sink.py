"""The SMTP sink: an aiosmtpd server in a process of its own (`python -m chaos.sink`), and the
harness's handle on it (`SmtpSink`).

A message is counted as delivered only when the sink's final `250` goes to a connection that
is still open: by RFC 5321 a message is the server's once it said 250, and a client that left
before that has not delivered it (and must send it again). What the sink would have accepted
from a client that had gone is recorded apart (`client_left`), for the diagnosis.

Modes, switched at run time by a line on the sink's standard input (each acknowledged by a
line `OK <mode>` on its standard output):
    ok                 answer at once
    slow <min> <max>   answer the final dot after a delay drawn from [min, max] seconds (a
                       spam scanner); the message counts only if the client is still there
    drop               abort the connection once the content has arrived, no reply; the
                       message is not the server's
    quit               stop

    python -m chaos.sink --records FILE [--seed N]     prints `READY <port>` once listening

Each record is one JSON line: {"t", "outcome" (delivered | client_left | dropped), "message_id",
"submission_id", "run_id", "rcpt", "mode", "delay"}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

import orjson
from aiosmtpd.smtp import SMTP

from chaos.processes import DIE_WITH_HARNESS
from dev.mailcatcher import advertise_pipelining

_HEADERS = {
    "message_id": re.compile(rb"^message-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE),
    "submission_id": re.compile(
        rb"^x-flowline-submission-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE
    ),
    "run_id": re.compile(rb"^x-flowline-run-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE),
}
DELIVERED, CLIENT_LEFT, DROPPED = "delivered", "client_left", "dropped"


def _headers(content: bytes) -> dict[str, str]:
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[:end]
    found = {}
    for name, pattern in _HEADERS.items():
        match = pattern.search(head)
        found[name] = match.group(1).decode("ascii", "replace") if match else ""
    return found


async def _hang_up(transport: asyncio.Transport) -> NoReturn:
    """Reset the connection without a reply; aiosmtpd's connection_lost then cancels us."""
    transport.abort()
    await asyncio.get_running_loop().create_future()
    raise AssertionError("a hung-up handler is cancelled, never resumed")


class Recorder:
    """The aiosmtpd handler: behaves as the current mode says and records every outcome."""

    def __init__(self, out: TextIO, rng: random.Random) -> None:
        self._out, self._rng = out, rng
        self.mode = "ok"
        self.delay_range = (0.0, 0.0)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        return advertise_pipelining(session, hostname, responses)

    def _record(self, outcome: str, envelope: Any, mode: str, delay: float) -> None:
        content: bytes = envelope.original_content or b""
        record = {
            "t": time.time(),
            "outcome": outcome,
            **_headers(content),
            "rcpt": list(envelope.rcpt_tos),
            "mode": mode,
            "delay": round(delay, 3),
        }
        self._out.write(orjson.dumps(record).decode() + "\n")
        self._out.flush()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mode = self.mode
        if mode == "drop":
            self._record(DROPPED, envelope, mode, 0.0)
            await _hang_up(server.transport)
        delay = self._rng.uniform(*self.delay_range) if mode == "slow" else 0.0
        if delay:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:  # the client closed the connection: not delivered
                self._record(CLIENT_LEFT, envelope, mode, delay)
                raise
        transport = server.transport
        if transport is None or transport.is_closing():
            self._record(CLIENT_LEFT, envelope, mode, delay)
            return "421 4.4.2 the client has gone"  # written nowhere
        # aiosmtpd writes what we return without yielding to the loop in between: the record
        # and the 250 on the wire go together.
        self._record(DELIVERED, envelope, mode, delay)
        return "250 2.0.0 OK"

    def command(self, line: str) -> str:
        words = line.split()
        if words == ["ok"] or words == ["drop"]:
            self.mode = words[0]
        elif len(words) == 3 and words[0] == "slow":
            self.delay_range = (float(words[1]), float(words[2]))
            self.mode = "slow"
        else:
            return f"ERROR unknown command {line!r}"
        return f"OK {self.mode}"


async def serve(records: Path, seed: int) -> None:
    loop = asyncio.get_running_loop()
    with records.open("a", encoding="utf-8") as out:
        recorder = Recorder(out, random.Random(seed))

        def protocol() -> SMTP:
            return SMTP(recorder, hostname="flowline-chaos-sink", decode_data=False, loop=loop)

        server = await loop.create_server(protocol, "127.0.0.1", 0)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        while line := (await reader.readline()).decode().strip():
            if line == "quit":
                break
            print(recorder.command(line), flush=True)
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="SMTP sink of the chaos soak (chaos/sink.py)")
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(serve(args.records, args.seed))


# -- the harness's side ---------------------------------------------------------------------------


class SinkError(Exception):
    """The SMTP sink did not start or stopped answering; the message says why."""


@dataclass(frozen=True, slots=True)
class SinkRecord:
    t: float
    outcome: str
    message_id: str
    submission_id: str
    run_id: str
    rcpt: tuple[str, ...]
    mode: str
    delay: float


class SmtpSink:
    """The sink process, driven from the harness's event loop."""

    def __init__(self, run_dir: Path, seed: int) -> None:
        self.records_path = run_dir / "sink-records.jsonl"
        self.log_path = run_dir / "sink.log"
        self._seed = seed
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.port = 0
        self.mode = "ok"
        self._read_up_to = 0
        self._delivered: set[str] = set()

    async def start(self, timeout: float = 15.0) -> int:
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "chaos.sink",
                "--records",
                str(self.records_path),
                "--seed",
                str(self._seed),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                preexec_fn=DIE_WITH_HARNESS,
            )
        line = await self._readline(timeout)
        match = re.fullmatch(r"READY (\d+)", line)
        if match is None:
            raise SinkError(f"the SMTP sink did not start ({line!r}; see {self.log_path})")
        self.port = int(match.group(1))
        return self.port

    async def _readline(self, timeout: float) -> str:
        assert self._process is not None and self._process.stdout is not None
        try:
            raw = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        except TimeoutError:
            return ""
        return raw.decode(errors="replace").strip()

    async def set_mode(self, command: str) -> None:
        """`ok`, `slow <min> <max>` or `drop`; returns once the sink has switched."""
        async with self._lock:
            process = self._process
            if process is None or process.stdin is None or process.returncode is not None:
                raise SinkError(f"the SMTP sink is not running (see {self.log_path})")
            process.stdin.write(command.encode() + b"\n")
            await process.stdin.drain()
            answer = await self._readline(10.0)
            if not answer.startswith("OK "):
                raise SinkError(f"the SMTP sink answered {answer!r} to {command!r}")
            self.mode = answer.removeprefix("OK ")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.write(b"quit\n")
            await process.stdin.drain()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()

    def delivered_recipients(self) -> set[str]:
        """Everyone the sink has delivered an email to so far (read on from where the last
        call stopped: the person asks every second)."""
        if self.records_path.exists():
            with self.records_path.open("rb") as records:
                records.seek(self._read_up_to)
                chunk = records.read()
            complete = chunk.rpartition(b"\n")[0]
            self._read_up_to += len(complete) + 1 if complete else 0
            for line in complete.splitlines():
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                    raw = orjson.loads(line)
                    if raw["outcome"] == DELIVERED:
                        self._delivered.update(str(r).lower() for r in raw["rcpt"])
        return self._delivered

    def records(self) -> list[SinkRecord]:
        if not self.records_path.exists():
            return []
        found = []
        for line in self.records_path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                raw = orjson.loads(line)
                found.append(
                    SinkRecord(
                        float(raw["t"]),
                        str(raw["outcome"]),
                        str(raw["message_id"]),
                        str(raw["submission_id"]),
                        str(raw["run_id"]),
                        tuple(str(r).lower() for r in raw["rcpt"]),
                        str(raw["mode"]),
                        float(raw["delay"]),
                    )
                )
        return found


if __name__ == "__main__":
    main()
