"""SMTP on the wire, below the mailer (smtp.py): a connection aiosmtplib opened and we then
write to directly, the reader of its replies (`_Replies`, which can read pipelined replies
as aiosmtplib cannot), and the envelope's commands as bytes. Apart from smtp.py so that the
mailer reads as pooling, sending and sorting errors; this part knows the protocol's bytes."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from typing import cast

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import (
    COMMAND_INJECTION_REGEX,
    MAX_LINE_LENGTH,
    MAX_RESPONSE_LENGTH,
)
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import SMTPStatus


class _Replies(asyncio.Protocol):
    """The server's replies, parsed as they arrive and queued in order, however many come in
    one segment; raises what aiosmtplib would once the connection is gone or a reply is late."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._queue: deque[SMTPResponse] = deque()
        self._error: aiosmtplib.SMTPException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def in_step(self) -> bool:
        """Nothing unread and nothing wrong: the next reply will answer the next command."""
        return self._error is None and not self._queue and not self._buffer

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while (reply := self._parse()) is not None:
                self._queue.append(reply)
            if len(self._buffer) > MAX_RESPONSE_LENGTH:
                raise aiosmtplib.SMTPResponseException(
                    SMTPStatus.invalid_response.value, "Response too long"
                )
        except aiosmtplib.SMTPResponseException as error:
            self._fail(error)  # out of step for good: the connection is not reused
        if self._queue:
            self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)

    def _fail(self, error: aiosmtplib.SMTPException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _parse(self) -> SMTPResponse | None:
        """The first complete reply (`NNN-text` lines, then `NNN text`), taken from the buffer."""
        lines: list[bytes] = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            line = bytes(self._buffer[start : end + 1])
            start = end + 1
            if len(line) > MAX_LINE_LENGTH:
                raise aiosmtplib.SMTPResponseException(
                    SMTPStatus.invalid_response.value, "Response too long"
                )
            try:
                code = int(line[:3])
            except ValueError:
                raise aiosmtplib.SMTPResponseException(
                    SMTPStatus.invalid_response.value,
                    f"Malformed SMTP response line: {line.decode('utf-8', errors='ignore')}",
                ) from None
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del self._buffer[:start]
                return SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))
        return None

    async def reply(self, timeout: float) -> SMTPResponse:
        """The next reply: those that came before the connection went are read first."""
        if not self._queue and self._error is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from None
            finally:
                self._waiter = None
        if self._queue:
            return self._queue.popleft()
        assert self._error is not None
        raise self._error


class Connection:
    """One SMTP session, set up by aiosmtplib, then written to directly and read by `_Replies`."""

    def __init__(self, client: aiosmtplib.SMTP, timeout: float) -> None:
        self._client = client  # closes what it opened
        self._transport = cast(asyncio.Transport, client.transport)
        self._replies = _Replies()
        self._transport.set_protocol(self._replies)
        self._timeout = timeout
        self.pipelining = client.supports_extension("pipelining")

    @property
    def usable(self) -> bool:
        return not self._transport.is_closing() and self._replies.in_step

    def send(self, data: bytes) -> None:
        if self._transport.is_closing():  # a closing transport would drop the data silently
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._transport.write(data)

    async def reply(self, timeout: float | None = None) -> SMTPResponse:
        return await self._replies.reply(timeout or self._timeout)

    async def command(self, line: bytes, timeout: float | None = None) -> SMTPResponse:
        self.send(line)
        return await self.reply(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def envelope_commands(sender: str, recipients: tuple[str, ...]) -> list[bytes]:
    """MAIL, one RCPT per recipient and DATA, as lines on the wire; checked as aiosmtplib
    checks its commands (no line break may slip into an address). The message is 7-bit clean
    (email_format): no BODY=8BITMIME, no SMTPUTF8."""
    lines = [b"MAIL FROM:" + _address(sender)]
    lines += [b"RCPT TO:" + _address(recipient) for recipient in recipients]
    return [line + b"\r\n" for line in [*lines, b"DATA"]]


# A bare address of this form is its own quoted form: no parsing needed (parseaddr was a few
# percent of the worker's time).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


def _address(address: str) -> bytes:
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    quoted = quote_address(address).encode("ascii")
    if COMMAND_INJECTION_REGEX.search(quoted):
        raise ValueError("Command arg contains a prohibited control character")
    return quoted
