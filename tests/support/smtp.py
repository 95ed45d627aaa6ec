"""A real SMTP server for the tests (aiosmtpd on 127.0.0.1), recording what it receives and
able to misbehave on request: refuse with a code, be slow, or go away."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from services.mailcatcher import advertise_pipelining
from tests.support.net import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float


@dataclass
class Behaviour:
    refuse_data: str | None = None  # e.g. "451 4.3.0 try later" or "550 5.1.1 no such user"
    refuse_rcpt: str | None = None
    data_delay: float = 0.0  # seconds to wait before answering DATA (the message is kept first)
    pipelining: bool = True  # advertise PIPELINING (RFC 2920) in the EHLO reply


class RecordingHandler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviour = Behaviour()
        self._lock = threading.Lock()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        if self.behaviour.pipelining:
            return advertise_pipelining(session, hostname, responses)
        session.host_name = hostname  # the hook's duty (aiosmtpd's handlers.rst)
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.behaviour.refuse_rcpt:
            return self.behaviour.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.behaviour.refuse_data:
            return self.behaviour.refuse_data
        content = envelope.original_content or envelope.content
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), message, time.time())
            )
        if self.behaviour.data_delay:
            await asyncio.sleep(self.behaviour.data_delay)
        return "250 Message accepted"


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: RecordingHandler = field(repr=False)
    controller: Controller | None = field(default=None, repr=False)

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def behaviour(self) -> Behaviour:
        return self.handler.behaviour

    def start(self) -> None:
        self.controller = Controller(
            self.handler, hostname=self.host, port=self.port, decode_data=False
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.rcpt_tos]


def start_smtp() -> SmtpServer:
    server = SmtpServer("127.0.0.1", free_port(), RecordingHandler())
    server.start()
    return server
