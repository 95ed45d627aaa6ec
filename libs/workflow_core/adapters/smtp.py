"""SMTP delivery with aiosmtplib over a small pool of reused connections.

Errors are sorted here, where they are caught: connection problems and 4xx replies are
retryable, 5xx replies permanent. A connection lost (or a reply that never came) after the
message was handed over is retryable too: as RFC 5321 has it, a message is the server's only
once it said 250, and a server that restarts mid-transaction drops it. The retry carries the
same Message-ID, which receivers use to recognise the rare repeat.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from workflow_core.actions.base import CommitHook
from workflow_core.email_format import OutgoingEmail
from workflow_core.errors import PermanentActionError, RetryableActionError
from workflow_core.log import get_logger
from workflow_core.settings import Settings

log = get_logger(__name__)

_TRANSPORT_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    aiosmtplib.SMTPConnectError,
    OSError,
    TimeoutError,
)


def classify(error: Exception, stage: str) -> Exception:
    """The Flowline error for an aiosmtplib/OS error raised before the message was handed over."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        error = error.recipients[0]
    if isinstance(error, aiosmtplib.SMTPResponseException):
        text = f"SMTP {stage} refused: {error.code} {error.message}"
        if 400 <= error.code < 500:
            return RetryableActionError(text)
        return PermanentActionError(text)
    if isinstance(error, aiosmtplib.SMTPNotSupported):
        return PermanentActionError(f"SMTP server does not support what is needed: {error}")
    if isinstance(error, _TRANSPORT_ERRORS):
        return RetryableActionError(
            f"SMTP server unreachable during {stage}: {type(error).__name__}: {error}"
        )
    return PermanentActionError(f"SMTP {stage} failed: {type(error).__name__}: {error}")


class SmtpMailer:
    """A `Mailer` for one SMTP server; at most `pool_size` connections, reused between emails."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        use_tls: bool = False,
        timeout: float = 10.0,
        pool_size: int = 8,
    ) -> None:
        self._host, self._port = host, port
        self._username, self._password = username or None, password or None
        # Port 465 speaks TLS from the first byte; elsewhere TLS means STARTTLS.
        self._implicit_tls = use_tls and port == 465
        self._start_tls = use_tls and port != 465
        self._timeout = timeout
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[aiosmtplib.SMTP] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpMailer:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_user,
            password=settings.smtp_password,
            use_tls=settings.smtp_use_tls,
            timeout=settings.smtp_timeout_seconds,
            pool_size=settings.smtp_pool_size,
        )

    async def send(self, message: OutgoingEmail, *, before_data: CommitHook) -> None:
        async with self._slots:
            client = await self._open_envelope(message.sender, list(message.recipients))
            await self._hand_over(client, message.data, before_data)

    async def _open_envelope(self, sender: str, recipients: list[str]) -> aiosmtplib.SMTP:
        """A connection on which MAIL and RCPT were accepted."""
        client, reused = await self._checkout()
        for last_try in (not reused, True):
            try:
                await self._envelope(client, sender, recipients)
                return client
            except _TRANSPORT_ERRORS as error:
                self._discard(client)
                if last_try:
                    raise classify(error, "envelope") from None
            except aiosmtplib.SMTPException as error:
                await self._reset(client)
                raise classify(error, "envelope") from None
            # A pooled connection went stale (the server closed it): once more, afresh.
            client = await self._connect()
        raise AssertionError("unreachable")

    async def _envelope(self, client: aiosmtplib.SMTP, sender: str, recipients: list[str]) -> None:
        await client.mail(sender)  # the message is 7-bit clean (email_format)
        refused: list[aiosmtplib.SMTPRecipientRefused] = []
        for recipient in recipients:
            try:
                await client.rcpt(recipient)
            except aiosmtplib.SMTPRecipientRefused as error:
                refused.append(error)
        if len(refused) == len(recipients):
            raise aiosmtplib.SMTPRecipientsRefused(refused)

    async def _hand_over(
        self, client: aiosmtplib.SMTP, message: bytes, before_data: CommitHook
    ) -> None:
        """DATA, then the commit hook, then the message: the hook (the idempotency claim) runs
        as late as it can, once the server waits for the content, so that a crash between the
        claim and the hand-over is as unlikely as it can be made."""
        content = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"
        try:
            reply = await client.execute_command(b"DATA")
        except _TRANSPORT_ERRORS as error:
            self._discard(client)
            raise classify(error, "DATA") from None
        if reply.code != 354:
            await self._reset(client)
            raise classify(aiosmtplib.SMTPDataError(reply.code, reply.message), "DATA")
        try:
            await before_data()
        except BaseException:
            self._discard(client)  # the server is reading content now: only closing aborts it
            raise
        protocol = client.protocol
        try:
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost before the content")
            protocol.write(content)
            reply = await protocol.read_response(timeout=self._timeout)
        except _TRANSPORT_ERRORS as error:
            self._discard(client)
            raise RetryableActionError(
                f"the SMTP server did not confirm the message ({type(error).__name__}: "
                f"{error}); it will be sent again with the same Message-ID"
            ) from None
        if reply.code != 250:
            # A reply was read: the server refused the message; nothing was delivered.
            await self._reset(client)
            raise classify(aiosmtplib.SMTPDataError(reply.code, reply.message), "DATA")
        self._idle.append(client)

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client, True
        return await self._connect(), False

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            username=self._username,
            password=self._password,
            use_tls=self._implicit_tls,
            start_tls=self._start_tls,
            timeout=self._timeout,
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()  # learn the extensions (8BITMIME) before MAIL
        except Exception as error:
            raise classify(error, "connect") from None
        return client

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        try:
            await client.rset()
        except Exception:
            self._discard(client)
        else:
            self._idle.append(client)

    def _discard(self, client: aiosmtplib.SMTP) -> None:
        with contextlib.suppress(Exception):
            client.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), timeout=2)
