"""SmtpMailer against real servers on 127.0.0.1: aiosmtpd (tests/support/smtp.py), and a raw
SMTP server scripted here, which records what each of its reads returned (to see what went out
in one write) and misbehaves in ways aiosmtpd cannot: split or multi-line replies, 354 to an
envelope it refused, hanging up at a chosen command."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.support.net import free_port
from tests.support.smtp import RecordingHandler, SmtpServer
from tests.support.waiting import eventually
from workflow_core.adapters.smtp import SmtpMailer
from workflow_core.email_format import OutgoingEmail, compose
from workflow_core.errors import PermanentActionError, RetryableActionError

SENDER = "flowline@example.com"


def email(*to: str, sender: str = SENDER) -> OutgoingEmail:
    return compose(
        sender=sender,
        to=list(to),
        cc=[],
        bcc=[],
        subject="Hello",
        text="Hi.\n.a line that starts with a dot\n",
        message_id=f"<{uuid.uuid4().hex}@example.com>",
    )


def on_the_wire(message: OutgoingEmail) -> bytes:
    """The content as the server reads it after 354 (dot-stuffed, then the lone dot)."""
    return message.data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def envelope(message: OutgoingEmail) -> bytes:
    lines = [f"MAIL FROM:<{message.sender}>".encode()]
    lines += [f"RCPT TO:<{recipient}>".encode() for recipient in message.recipients]
    return b"".join(line + b"\r\n" for line in [*lines, b"DATA"])


async def nothing() -> None:
    pass


@dataclass
class _Session:
    sender: bool = False
    recipients: list[bytes] = field(default_factory=list)
    content: list[bytes] | None = None  # lines, while in the data phase


class ScriptedSmtp:
    """A raw SMTP server that follows RFC 2920 (503 to RCPT without MAIL, to DATA without an
    accepted RCPT) unless `answers` says otherwise: a command line, or its verb, or b"." (the
    end of the content) maps to the reply to send, b"" for none, None to hang up instead. It
    answers each read at once, in one write (or in pieces of `chunk` bytes, 5 ms apart)."""

    def __init__(
        self, *, pipelining: bool = True, answers: dict[bytes, bytes | None] | None = None
    ) -> None:
        self.ehlo = b"250-scripted\r\n" + (b"250-PIPELINING\r\n" if pipelining else b"")
        self.ehlo += b"250 HELP\r\n"
        self.answers = dict(answers or {})
        self.chunk = 0
        self.hang_up_on: bytes | None = None
        """A verb: the next time it comes, the server hangs up instead of answering."""
        self.reads: list[bytes] = []
        self.commands: list[bytes] = []
        self.contents: list[bytes] = []
        """Every data phase's content, refused or not."""
        self.messages: list[tuple[list[bytes], bytes]] = []
        """(recipients, content) of every message accepted with 250."""
        self.connections = 0
        self.client_closes = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> ScriptedSmtp:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    def hang_up_all(self) -> None:
        for writer in list(self._writers):
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        session, buffer = _Session(), b""
        try:
            await self._say(writer, b"220 scripted ESMTP\r\n")
            while chunk := await reader.read(65536):
                self.reads.append(chunk)
                *lines, buffer = (buffer + chunk).split(b"\r\n")
                out = b""
                for line in lines:
                    reply = self._answer(session, line)
                    if reply is None:
                        return
                    out += reply
                await self._say(writer, out)
                if self.commands[-1:] == [b"QUIT"]:
                    return
            if not writer.is_closing():  # not hung up by us
                self.client_closes += 1
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _say(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        step = self.chunk or len(data) or 1
        for start in range(0, len(data), step):
            writer.write(data[start : start + step])
            await writer.drain()
            if self.chunk:
                await asyncio.sleep(0.005)

    def _answer(self, session: _Session, line: bytes) -> bytes | None:
        if session.content is not None:
            if line != b".":
                session.content.append(line + b"\r\n")
                return b""
            content, session.content = b"".join(session.content), None
            self.contents.append(content)
            reply = self._reply(line, b".", b"250 2.0.0 queued\r\n")
            if session.recipients and reply and reply.startswith(b"250"):
                self.messages.append((session.recipients, content))
            session.sender, session.recipients = False, []
            return reply
        self.commands.append(line)
        verb = line[:4].upper()
        if verb == self.hang_up_on:
            self.hang_up_on = None
            return None
        defaults = {
            b"EHLO": self.ehlo,
            b"MAIL": b"250 2.1.0 ok\r\n",
            b"RCPT": b"250 2.1.5 ok\r\n" if session.sender else b"503 5.5.1 MAIL first\r\n",
            b"DATA": b"354 go ahead\r\n" if session.recipients else b"503 5.5.1 RCPT first\r\n",
            b"RSET": b"250 2.0.0 ok\r\n",
            b"QUIT": b"221 2.0.0 bye\r\n",
        }
        reply = self._reply(line, verb, defaults.get(verb, b"500 5.5.2 what?\r\n"))
        accepted = bool(reply and reply[:1] == b"2")
        if verb == b"MAIL":
            session.sender = accepted
        elif verb == b"RCPT" and accepted and session.sender:
            session.recipients.append(line.partition(b":")[2].strip(b"<>"))
        elif verb == b"DATA" and reply and reply.startswith(b"354"):
            session.content = []
        elif verb == b"RSET":
            session.sender, session.recipients = False, []
        return reply

    def _reply(self, line: bytes, verb: bytes, default: bytes) -> bytes | None:
        return self.answers.get(line, self.answers.get(verb, default))


StartScripted = Callable[..., Awaitable[ScriptedSmtp]]
MakeMailer = Callable[..., SmtpMailer]


@pytest.fixture
async def scripted() -> AsyncIterator[StartScripted]:
    started: list[ScriptedSmtp] = []

    async def start(**options: Any) -> ScriptedSmtp:
        server = await ScriptedSmtp(**options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def mailers() -> AsyncIterator[MakeMailer]:
    made: list[SmtpMailer] = []

    def make(port: int, **options: Any) -> SmtpMailer:
        options.setdefault("timeout", 5.0)
        mailer = SmtpMailer(host="127.0.0.1", port=port, **options)
        made.append(mailer)
        return mailer

    yield make
    for mailer in made:
        await mailer.close()


async def test_with_pipelining_the_envelope_goes_in_one_write_and_the_connection_is_reused(
    scripted: StartScripted, mailers: MakeMailer
) -> None:
    server = await scripted()
    mailer = mailers(server.port)
    first = email("ada@example.com", "bob@example.com")
    second = email("cy@example.com")
    await mailer.send(first)
    await mailer.send(second)

    assert server.reads[1:] == [
        envelope(first),
        on_the_wire(first),
        envelope(second),
        on_the_wire(second),
    ]
    assert server.connections == 1
    assert server.messages == [
        ([b"ada@example.com", b"bob@example.com"], on_the_wire(first)[:-3]),
        ([b"cy@example.com"], on_the_wire(second)[:-3]),
    ]


async def test_without_pipelining_the_commands_go_one_at_a_time(
    scripted: StartScripted, mailers: MakeMailer
) -> None:
    server = await scripted(pipelining=False)
    message = email("ada@example.com", "bob@example.com")

    await mailers(server.port).send(message)

    assert server.reads[1:] == [
        b"MAIL FROM:<flowline@example.com>\r\n",
        b"RCPT TO:<ada@example.com>\r\n",
        b"RCPT TO:<bob@example.com>\r\n",
        b"DATA\r\n",
        on_the_wire(message),
    ]
    assert len(server.messages) == 1


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-at-a-time"])
async def test_aiosmtpd_gets_every_email_either_way(
    smtp: SmtpServer, mailers: MakeMailer, pipelining: bool
) -> None:
    smtp.behaviour.pipelining = pipelining
    mailer = mailers(smtp.port)
    messages = [email("ada@example.com", "bob@example.com"), email("cy@example.com")]

    for message in messages:
        await mailer.send(message)

    assert [(r.mail_from, r.rcpt_tos) for r in smtp.received] == [
        (SENDER, ["ada@example.com", "bob@example.com"]),
        (SENDER, ["cy@example.com"]),
    ]
    body = smtp.received[0].message.get_body()
    assert body is not None
    assert "\n.a line that starts with a dot" in body.get_content()  # unstuffed


async def test_multi_line_replies_split_across_segments_are_read_in_order(
    scripted: StartScripted, mailers: MakeMailer
) -> None:
    refused = b"550-no such user\r\n550 5.1.1 here\r\n"
    server = await scripted(
        answers={b"MAIL": b"250-first\r\n250 second\r\n", b"RCPT TO:<gone@example.com>": refused}
    )
    server.chunk = 3
    mailer = mailers(server.port)

    await mailer.send(email("gone@example.com", "ada@example.com"))
    with pytest.raises(PermanentActionError, match=re.escape("550 no such user\n5.1.1 here")):
        await mailer.send(email("gone@example.com"))
    await mailer.send(email("bob@example.com"))

    assert [recipients for recipients, _ in server.messages] == [
        [b"ada@example.com"],
        [b"bob@example.com"],
    ]
    assert server.connections == 1


async def test_one_refused_recipient_of_two_does_not_stop_the_other(
    scripted: StartScripted, mailers: MakeMailer
) -> None:
    server = await scripted(answers={b"RCPT TO:<gone@example.com>": b"550 5.1.1 no such user\r\n"})

    await mailers(server.port).send(email("ada@example.com", "gone@example.com"))

    assert [recipients for recipients, _ in server.messages] == [[b"ada@example.com"]]


async def test_all_recipients_refused_sends_no_content_and_keeps_the_connection(
    scripted: StartScripted, mailers: MakeMailer
) -> None:
    server = await scripted(answers={b"RCPT": b"550 5.1.1 no such user\r\n"})
    mailer = mailers(server.port)

    with pytest.raises(
        PermanentActionError, match=re.escape("SMTP envelope refused: 550 5.1.1 no such")
    ):
        await mailer.send(email("ada@example.com", "bob@example.com"))
    # DATA went in the pipeline; the server answered it 503, as RFC 2920 has it.
    assert server.commands[-2:] == [b"DATA", b"RSET"]
    del server.answers[b"RCPT"]
    second = email("cy@example.com")
    await mailer.send(second)

    assert server.contents == [on_the_wire(second)[:-3]]
    assert (len(server.messages), server.connections) == (1, 1)


async def test_aiosmtpd_refusing_every_recipient_gets_no_email_and_stays_usable(
    smtp: SmtpServer, mailers: MakeMailer
) -> None:
    mailer = mailers(smtp.port)
    smtp.behaviour.refuse_rcpt = "550 5.1.1 no such user"

    with pytest.raises(PermanentActionError, match=re.escape("550 5.1.1 no such user")):
        await mailer.send(email("ada@example.com", "bob@example.com"))
    assert smtp.received == []
    smtp.behaviour.refuse_rcpt = None
    await mailer.send(email("cy@example.com"))

    assert [r.rcpt_tos for r in smtp.received] == [["cy@example.com"]]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"451 4.3.0 try later\r\n", RetryableActionError),
        (b"550 5.7.1 not you\r\n", PermanentActionError),
    ],
)
async def test_a_refused_sender_is_classified_and_the_connection_reused(
    scripted: StartScripted,
    mailers: MakeMailer,
    reply: bytes,
    error: type[Exception],
) -> None:
    server = await scripted(answers={b"MAIL FROM:<nobody@example.com>": reply})
    mailer = mailers(server.port)

    with pytest.raises(error, match=f"SMTP envelope refused: {reply[:3].decode()}"):
        await mailer.send(email("ada@example.com", sender="nobody@example.com"))
    await mailer.send(email("ada@example.com"))

    assert server.commands[1:5] == [
        b"MAIL FROM:<nobody@example.com>",
        b"RCPT TO:<ada@example.com>",
        b"DATA",
        b"RSET",
    ]
    assert len(server.messages) == 1
    assert server.connections == 1


async def test_354_to_an_envelope_with_no_recipient_ends_with_an_empty_message(
    scripted: StartScripted, mailers: MakeMailer
) -> None:
    server = await scripted(
        answers={b"RCPT": b"550 5.1.1 no such user\r\n", b"DATA": b"354 go ahead\r\n"}
    )
    mailer = mailers(server.port)
    with pytest.raises(PermanentActionError, match=re.escape("SMTP envelope refused: 550 5.1.1")):
        await mailer.send(email("ada@example.com"))

    assert server.reads[-2:] == [b".\r\n", b"RSET\r\n"]
    assert (server.contents, server.messages) == ([b""], [])
    server.answers.clear()
    await mailer.send(email("bob@example.com"))
    assert (len(server.messages), server.connections) == (1, 1)


@pytest.mark.parametrize("reply", [None, b""], ids=["hangs-up", "never-answers"])
async def test_no_reply_after_the_content_is_retryable_with_the_same_message_id(
    scripted: StartScripted, mailers: MakeMailer, reply: bytes | None
) -> None:
    server = await scripted(answers={b".": reply})
    mailer = mailers(server.port, timeout=0.5, data_timeout=0.5)

    with pytest.raises(RetryableActionError, match="sent again with the same Message-ID"):
        await mailer.send(email("ada@example.com"))

    assert len(server.contents) == 1
    server.answers.clear()
    await mailer.send(email("bob@example.com"))
    assert server.connections == 2  # the connection in doubt was not reused


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    scripted: StartScripted, mailers: MakeMailer
) -> None:
    server = await scripted()
    mailer = mailers(server.port)
    await mailer.send(email("ada@example.com"))

    server.hang_up_all()
    await eventually(lambda: not server.open_connections, what="the server hung up")
    await asyncio.sleep(0.05)  # for the mailer to take the EOF: found stale before any write
    await mailer.send(email("bob@example.com"))

    assert (len(server.messages), server.connections) == (2, 2)


async def test_a_pooled_connection_that_turns_out_stale_in_the_envelope_is_replaced_once(
    scripted: StartScripted, mailers: MakeMailer
) -> None:
    server = await scripted()
    mailer = mailers(server.port)
    await mailer.send(email("ada@example.com"))

    server.hang_up_on = b"MAIL"  # as if its idle timeout struck just as the envelope came
    await mailer.send(email("bob@example.com"))
    assert (len(server.messages), server.connections) == (2, 2)

    server.hang_up_on = b"MAIL"
    await mailer.close()  # a fresh connection that fails is not tried again
    with pytest.raises(RetryableActionError, match="unreachable during envelope"):
        await mailer.send(email("cy@example.com"))
    assert (len(server.messages), server.connections) == (2, 3)


async def test_a_restarted_aiosmtpd_is_reconnected_to(
    smtp: SmtpServer, mailers: MakeMailer
) -> None:
    mailer = mailers(smtp.port)
    await mailer.send(email("ada@example.com"))

    smtp.stop()  # drops the pooled connection
    smtp.start()
    await mailer.send(email("bob@example.com"))

    assert [r.rcpt_tos for r in smtp.received] == [["ada@example.com"], ["bob@example.com"]]


async def test_a_send_cancelled_while_the_server_judges_the_content_closes_the_connection(
    smtp: SmtpServer, mailers: MakeMailer
) -> None:
    """A worker stopping while it waits for the final reply: the connection is closed (so a
    late 250 cannot be read as another email's), and the next email gets a new one."""
    smtp.behaviour.data_delay = 5.0
    smtp.behaviour.accept_at_reply = True
    mailer = mailers(smtp.port, timeout=0.5)
    sending = asyncio.ensure_future(mailer.send(email("ada@example.com")))
    await eventually(lambda: smtp.handler.judging == 1, what="the server judging the content")
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    smtp.behaviour.data_delay = 0
    await mailer.send(email("bob@example.com"))
    await eventually(lambda: smtp.handler.judging == 0, timeout=10, what="the first judgement")
    assert [r.rcpt_tos for r in smtp.received] == [["bob@example.com"]]


async def test_a_final_reply_slower_than_the_command_timeout_is_waited_for(
    smtp: SmtpServer, mailers: MakeMailer
) -> None:
    """A server that scans before it answers the end of the content (15 s in the field; 1.5 s
    here, three times the command timeout) gets the message once, and the send succeeds."""
    smtp.behaviour.data_delay = 1.5
    mailer = mailers(smtp.port, timeout=0.5, data_timeout=10)

    await mailer.send(email("ada@example.com"))

    assert [r.rcpt_tos for r in smtp.received] == [["ada@example.com"]]


async def test_a_final_reply_later_than_the_data_timeout_is_retryable_and_not_delivered(
    smtp: SmtpServer, mailers: MakeMailer
) -> None:
    """RFC 5321: the message is the server's only once it said 250. A server that accepts only
    when it answers, answering after the client gave up, has taken nothing; the client closes
    the connection and says the email will be sent again."""
    smtp.behaviour.data_delay = 2.0
    smtp.behaviour.accept_at_reply = True
    mailer = mailers(smtp.port, timeout=0.5, data_timeout=0.5)

    with pytest.raises(RetryableActionError, match="sent again with the same Message-ID"):
        await mailer.send(email("ada@example.com"))

    await eventually(lambda: smtp.handler.judging == 0, timeout=10, what="the late judgement")
    assert smtp.received == []


async def test_close_says_quit_to_idle_connections(
    scripted: StartScripted, mailers: MakeMailer
) -> None:
    server = await scripted()
    mailer = mailers(server.port)
    await mailer.send(email("ada@example.com"))

    await mailer.close()

    assert server.commands[-1] == b"QUIT"
    await eventually(lambda: not server.open_connections, what="the connection closed")


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, trusted by this process's TLS clients."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    return cert, key


async def test_starttls_then_pipelining_over_tls(
    certificate: tuple[Path, Path], mailers: MakeMailer
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    handler = RecordingHandler()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        decode_data=False,
        tls_context=context,
        require_starttls=True,  # MAIL before STARTTLS would be refused
    )
    controller.start()
    try:
        mailer = mailers(port, use_tls=True)
        await mailer.send(email("ada@example.com", "bob@example.com"))
        await mailer.send(email("cy@example.com"))
        await mailer.close()
    finally:
        controller.stop()

    assert [r.rcpt_tos for r in handler.received] == [
        ["ada@example.com", "bob@example.com"],
        ["cy@example.com"],
    ]
