"""A real HTTP/1.1 webhook receiver for the tests (asyncio, on 127.0.0.1), recording every
request, checking its Standard Webhooks signature, and able to misbehave on request: answer
with a given status (and headers) for the next N requests, never answer at all, trickle its
head one line at a time, or send a head or a body that never ends (each bounded, so a test
that goes wrong still stops)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

_HEAD_LIMIT = 64 * 1024
RECEIVER_HOST = "127.0.0.1"
"""Where receivers listen: loopback, which a webhook may call only when WEBHOOK_ALLOWED_HOSTS
lists it (the tests' settings do)."""


@dataclass(frozen=True)
class Received:
    method: str
    target: str
    headers: dict[str, str]
    """Lower-cased names; a repeated name keeps its last value (see `header_lines`)."""
    header_lines: list[tuple[str, str]]
    body: bytes
    at: float
    signature_error: str | None
    """None when the signature verified (or no secret was set), else why it did not."""

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path)

    @property
    def query(self) -> str:
        return unquote(urlsplit(self.target).query)

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    """Never answer; wait until the client gives up and closes the connection."""
    trickle_seconds: float | None = None
    """Send the status line, then one more header line every this many seconds, and never
    end the head (for at most two minutes)."""
    endless_head: bool = False
    """Send header lines as fast as the client takes them, never ending the head."""
    endless_body: bytes | None = None
    """After a head without a length, send this chunk again and again."""
    held: asyncio.Event | None = None
    """Answer only once this is set (the request is received and recorded at once)."""


_ENDLESS_LIMIT = 256 * 1024 * 1024  # what an "endless" answer sends at most
_TRICKLE_LINES = 120


class HttpReceiver:
    def __init__(self, secret: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.secret = secret
        self.tls = tls
        """With a server context: HTTPS (`url` starts with https://)."""
        self.received: list[Received] = []
        self._plan: list[Answer] = []
        self._server: asyncio.Server | None = None
        self.url = ""
        self.port = 0
        self.sent_bytes = 0
        """What the misbehaving answers sent (before the client went away)."""
        self.connections = 0
        """Connections accepted (with TLS: handshakes completed), requests or not."""

    def answer(self, answer: Answer, times: int = 1) -> None:
        """Answer the next `times` requests so (after them, 200)."""
        self._plan.extend([answer] * times)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, RECEIVER_HOST, 0, limit=_HEAD_LIMIT, ssl=self.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://{RECEIVER_HOST}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await self._one_request(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.removesuffix("\r\n\r\n").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        header_lines = [
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in lines)
        ]
        headers = dict(header_lines)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append(
            Received(
                method,
                target,
                headers,
                header_lines,
                body,
                time.monotonic(),
                self._signature_error(body, headers),
            )
        )
        answer = self._plan.pop(0) if self._plan else Answer()
        if answer.held is not None:
            await answer.held.wait()
        if answer.hang:
            await reader.read()  # until the client closes
            return
        if answer.trickle_seconds is not None:
            await self._send(writer, [b"HTTP/1.1 200 OK\r\n"])
            for n in range(_TRICKLE_LINES):
                await asyncio.sleep(answer.trickle_seconds)
                await self._send(writer, [f"x-trickle-{n}: {n}\r\n".encode()])
            return
        if answer.endless_head:
            line = b"x-endless: " + b"h" * 1000 + b"\r\n"
            await self._send_endlessly(writer, b"HTTP/1.1 200 OK\r\n", line)
            return
        if answer.endless_body is not None:
            head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n"
            await self._send_endlessly(writer, head, answer.endless_body)
            return
        writer.write(_response(answer))
        await writer.drain()

    async def _send(self, writer: asyncio.StreamWriter, chunks: list[bytes]) -> None:
        for chunk in chunks:
            writer.write(chunk)
            self.sent_bytes += len(chunk)
        await writer.drain()

    async def _send_endlessly(
        self, writer: asyncio.StreamWriter, first: bytes, chunk: bytes
    ) -> None:
        await self._send(writer, [first])
        while self.sent_bytes < _ENDLESS_LIMIT:
            await self._send(writer, [chunk] * 16)  # until the client goes away

    def _signature_error(self, body: bytes, headers: dict[str, str]) -> str | None:
        if self.secret is None:
            return None
        try:
            Webhook(self.secret).verify(body, headers, json_parse=False)
        except (WebhookVerificationError, ValueError) as error:
            return f"{type(error).__name__}: {error}"
        return None


def _response(answer: Answer) -> bytes:
    headers = {
        "content-type": "application/json",
        **answer.headers,
        "content-length": str(len(answer.body)),
        "connection": "close",
    }
    head = f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return (head + "\r\n").encode("latin-1") + answer.body


@contextlib.asynccontextmanager
async def http_receiver(
    secret: str | None = None, tls: ssl.SSLContext | None = None
) -> AsyncIterator[HttpReceiver]:
    receiver = HttpReceiver(secret, tls)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
