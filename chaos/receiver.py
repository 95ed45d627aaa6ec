"""The webhook receiver: a small HTTP/1.1 server in the harness's event loop that records every
call with its `webhook-id` and answers as its mode says: `ok` (200), `503` (try later), or
`hang` (never answer; the client must time out). Webhooks are at-least-once, so a webhook-id
called more than once is reported, not a failure; a run that recorded its webhook as done
without the receiver having answered 200 is."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Literal

import orjson

Mode = Literal["ok", "503", "hang"]
_HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class WebhookCall:
    t: float
    webhook_id: str
    submission_id: str
    mode: Mode
    answered: int | None
    """The status written back (None: hung, or the client left before the answer)."""


class WebhookReceiver:
    def __init__(self) -> None:
        self.mode: Mode = "ok"
        self.calls: list[WebhookCall] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._hanging: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/chaos/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_HEAD_LIMIT)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.set_mode("ok")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode != "hang":  # the clients of hung calls have given up by now, or will
            for writer in list(self._hanging):
                writer.transport.abort()
            self._hanging.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(
                ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError
            ):
                while await self._one_request(reader, writer):
                    pass
        finally:
            self._hanging.discard(writer)
            writer.transport.abort()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; whether the connection may carry another."""
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
        submission_id = ""
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            submission_id = str(orjson.loads(body).get("submission_id", ""))
        mode, webhook_id, t = self.mode, headers.get("webhook-id", ""), time.time()
        if mode == "hang":
            self._hanging.add(writer)
            self.calls.append(WebhookCall(t, webhook_id, submission_id, mode, None))
            await reader.read()  # until the client gives up (or the mode ends)
            return False
        status = 200 if mode == "ok" else 503
        reason = b"OK" if status == 200 else b"Service Unavailable"
        payload = b'{"ok": true}' if status == 200 else b'{"error": "try later"}'
        if writer.transport.is_closing():  # the client gave up: nothing can be answered
            self.calls.append(WebhookCall(t, webhook_id, submission_id, mode, None))
            return False
        writer.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, reason, len(payload), payload)
        )
        self.calls.append(WebhookCall(t, webhook_id, submission_id, mode, status))
        await writer.drain()
        return True
