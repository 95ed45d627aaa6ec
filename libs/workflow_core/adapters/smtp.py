"""SMTP delivery over a small pool of reused connections, pipelined where the server allows.

aiosmtplib opens each connection (TLS, EHLO, AUTH); then `_Replies` (smtp_wire.py), a reader
of our own, takes over its transport. When the server advertises PIPELINING (RFC 2920), MAIL,
every RCPT and DATA go out in one write and their replies are read together, then the content
in a second write: two round trips per email instead of four. aiosmtplib cannot read pipelined
replies (its protocol drops what arrives before it waits for it). Without PIPELINING the same
commands go one at a time.

Errors are sorted here, where they are caught: connection problems and 4xx replies are
retryable, 5xx replies permanent. A connection lost (or a reply that never came) after the
content was sent is retryable too: as RFC 5321 has it, a message is the server's only once it
said 250, and a server whose client went away before that drops it. The reply to the end of
the content may take long (spam scanning): it is awaited up to `data_timeout`
(SMTP_DATA_TIMEOUT_SECONDS, 10 minutes as RFC 5321 4.5.3.2.6 asks), every other reply up to
`timeout`. A retry carries the same Message-ID.

A connection that cannot be opened is counted (`flowline_smtp_connection_failures_total`),
marks SMTP down (`flowline_dependency_up{dependency="smtp"}`), and is logged as a warning with
its reason, at most once a minute (`smtp_unreachable`, with how many failures it stands for).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiosmtplib
from aiosmtplib.protocol import (
    PERIOD_REGEX,
    normalize_message_line_endings,
)
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import SMTPStatus

from workflow_core import metrics, tracing
from workflow_core.adapters.smtp_wire import Connection, envelope_commands
from workflow_core.email_format import OutgoingEmail
from workflow_core.errors import PermanentActionError, RetryableActionError
from workflow_core.log import get_logger
from workflow_core.runtime.pacing import Every
from workflow_core.settings import Settings

log = get_logger(__name__)


UNREACHABLE_WARNING_SECONDS = 60.0


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


def _envelope_settled(replies: list[SMTPResponse], recipients: int) -> bool:
    """Whether the replies so far to MAIL and the RCPTs already say the envelope failed."""
    if replies[0].code != SMTPStatus.completed:
        return True
    return len(replies) == 1 + recipients and not any(
        reply.code in (SMTPStatus.completed, SMTPStatus.will_forward) for reply in replies[1:]
    )


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
        data_timeout: float = 600.0,
        pool_size: int = 8,
    ) -> None:
        self._host, self._port = host, port
        self._username, self._password = username or None, password or None
        # Port 465 speaks TLS from the first byte; elsewhere TLS means STARTTLS.
        self._implicit_tls = use_tls and port == 465
        self._start_tls = use_tls and port != 465
        self._timeout, self._data_timeout = timeout, data_timeout
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[Connection] = []
        self._unreachable = Every(UNREACHABLE_WARNING_SECONDS)
        self._down = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpMailer:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_user,
            password=settings.smtp_password,
            use_tls=settings.smtp_use_tls,
            timeout=settings.smtp_timeout_seconds,
            data_timeout=settings.smtp_data_timeout_seconds,
            pool_size=settings.smtp_pool_size,
        )

    async def send(self, message: OutgoingEmail) -> None:
        try:
            commands = envelope_commands(message.sender, message.recipients)
        except ValueError as error:
            raise classify(error, "envelope") from None
        content = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message.data)) + b".\r\n"
        with tracing.span(
            "smtp send", self._span_attributes(message), kind=tracing.SpanKind.CLIENT
        ):
            async with self._slots:
                connection = await self._open_envelope(message, commands)
                await self._deliver(connection, content)

    def _span_attributes(self, message: OutgoingEmail) -> dict[str, Any] | None:
        if not tracing.ENABLED:
            return None
        return {
            "server.address": self._host,
            "server.port": self._port,
            "flowline.recipients": len(message.recipients),
            "flowline.message_bytes": len(message.data),
        }

    async def _open_envelope(self, message: OutgoingEmail, commands: list[bytes]) -> Connection:
        """A connection on which MAIL, RCPT and DATA were accepted: the server awaits content."""
        connection, reused = await self._checkout()
        for last_try in (not reused, True):
            try:
                await self._envelope(connection, message, commands)
                return connection
            except _TRANSPORT_ERRORS as error:
                connection.close()
                if last_try:
                    raise classify(error, "envelope") from None
            except aiosmtplib.SMTPException as error:
                await self._reset(connection)
                stage = "DATA" if isinstance(error, aiosmtplib.SMTPDataError) else "envelope"
                raise classify(error, stage) from None
            # A pooled connection went stale (the server closed it): once more, afresh.
            connection = await self._connect()
        raise AssertionError("unreachable")

    async def _envelope(
        self, connection: Connection, message: OutgoingEmail, commands: list[bytes]
    ) -> None:
        """Every reply to what was sent is read before a refusal is raised: the replies stay in
        step with the commands, and the connection can be reset and reused."""
        recipients = message.recipients
        replies: list[SMTPResponse] = []
        if connection.pipelining:
            connection.send(b"".join(commands))
            for _ in commands:
                replies.append(await connection.reply())
        else:
            for command in commands:
                replies.append(await connection.command(command))
                if _envelope_settled(replies, len(recipients)):
                    break
        mail, data = replies[0], replies[1 + len(recipients) :]
        refused = [
            aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
            for recipient, reply in zip(recipients, replies[1:], strict=False)
            if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward)
        ]
        error: aiosmtplib.SMTPException
        if mail.code != SMTPStatus.completed:
            error = aiosmtplib.SMTPSenderRefused(mail.code, mail.message, message.sender)
        elif len(refused) == len(recipients):
            error = aiosmtplib.SMTPRecipientsRefused(refused)
        elif data[0].code != SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(data[0].code, data[0].message)
        else:
            return
        if data and data[0].code == SMTPStatus.start_input:
            # The server wants content for an envelope it refused (RFC 2920 says it must not):
            # an empty message ends the data phase; its reply is read to stay in step.
            await connection.command(b".\r\n")
        raise error

    async def _deliver(self, connection: Connection, content: bytes) -> None:
        """The content, then its reply: only a 250 means the server took the message."""
        try:
            reply = await connection.command(content, timeout=self._data_timeout)
        except (*_TRANSPORT_ERRORS, aiosmtplib.SMTPResponseException) as error:
            connection.close()  # a reply that comes later must not be read as another's
            raise RetryableActionError(
                f"the SMTP server did not confirm the message ({type(error).__name__}: "
                f"{error}); it will be sent again with the same Message-ID"
            ) from None
        except BaseException:
            connection.close()  # cancelled while the server reads or judges the content
            raise
        if reply.code != SMTPStatus.completed:
            # A reply was read: the server refused the message; nothing was delivered.
            await self._reset(connection)
            raise classify(aiosmtplib.SMTPDataError(reply.code, reply.message), "DATA")
        self._idle.append(connection)

    async def _checkout(self) -> tuple[Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection, True
            connection.close()
        return await self._connect(), False

    async def _connect(self) -> Connection:
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
                await client.ehlo()  # learn the extensions (PIPELINING) before MAIL
        except Exception as error:
            failure = classify(error, "connect")
            self._connection_failed(failure)
            raise failure from None
        if self._down:
            self._down = False
            log.info("smtp_reachable_again", host=self._host, port=self._port)
        metrics.dependency("smtp", True)
        return Connection(client, self._timeout)

    def _connection_failed(self, failure: Exception) -> None:
        metrics.SMTP_CONNECTION_FAILURES.inc()
        metrics.dependency("smtp", False)
        self._down = True
        if self._unreachable.ready():
            log.warning(
                "smtp_unreachable",
                host=self._host,
                port=self._port,
                error=str(failure),
                failures_not_logged=self._unreachable.take_held_back(),
                next_warning_in=UNREACHABLE_WARNING_SECONDS,
            )

    async def _reset(self, connection: Connection) -> None:
        try:
            reply = await connection.command(b"RSET\r\n")
        except Exception:
            reply = None
        if reply is not None and reply.code == SMTPStatus.completed:
            self._idle.append(connection)
        else:
            connection.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.command(b"QUIT\r\n"), timeout=2)
            connection.close()
