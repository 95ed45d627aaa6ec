"""A minimal HTTP/1.1 client over asyncio streams, for the load generator and the harness.

One request at a time per keep-alive connection; the response is read as a status line, the
headers, then a Content-Length (or chunked) body. A request costs tens of microseconds of CPU
here, where httpx costs milliseconds, so the load generator is never what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

# uvicorn closes a keep-alive connection idle for 5 s; we reopen ours a little before that.
IDLE_REOPEN_SECONDS = 4.0


class HttpError(Exception):
    """The server's answer is not an HTTP/1.1 response this client understands."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes


class Connection:
    """One keep-alive connection to `host:port`, (re)opened on demand."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0
        self._host_header = f"Host: {host}:{port}\r\n".encode()
        self.opened = 0

    async def open(self) -> None:
        await self.close()
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout
        )
        self._last_used = time.monotonic()
        self.opened += 1

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def encode(self, method: str, path: str, body: bytes | None) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._host_header
        if body is None:
            return head + b"\r\n"
        return (
            head
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )

    async def ready(self) -> None:
        """Open the connection unless a usable one is already open."""
        stale = time.monotonic() - self._last_used > IDLE_REOPEN_SECONDS
        if self._writer is None or stale or self._writer.is_closing():
            await self.open()

    def send(self, method: str, path: str, body: bytes | None = None) -> None:
        """Write one request; the connection must be `ready()`."""
        assert self._writer is not None
        self._writer.write(self.encode(method, path, body))

    async def receive(self) -> Response:
        """Read one response; on any failure the connection is closed (reopened next time)."""
        try:
            return await asyncio.wait_for(self._read_response(), self.timeout)
        except BaseException:
            await self.close()
            raise

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        await self.ready()
        self.send(method, path, body)
        return await self.receive()

    async def _read_response(self) -> Response:
        reader = self._reader
        assert reader is not None
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or len(head) < 12:
            raise HttpError(f"not an HTTP/1.x status line: {head[:40]!r}")
        status = int(head[9:12])
        lower = head.lower()
        start = lower.find(b"\r\ncontent-length:")
        close = b"\r\nconnection: close" in lower
        if start >= 0:
            end = lower.index(b"\r\n", start + 2)
            body = await reader.readexactly(int(head[start + 17 : end]))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await _read_chunked(reader)
        else:
            body, close = await reader.read(), True
        self._last_used = time.monotonic()
        if close:
            await self.close()
        return Response(status, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent to us
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def fetch(
    host: str, port: int, method: str, path: str, body: bytes | None = None, timeout: float = 5.0
) -> Response:
    """One request on a connection of its own."""
    connection = Connection(host, port, timeout=timeout)
    try:
        return await connection.request(method, path, body)
    finally:
        await connection.close()
