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

from dev.mailcatcher import advertise_pipelining
from tests.support.net import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float
    """When the server kept it (time.time())."""
    replied_at: float = 0.0
    """When the server gave its 250 (the same as `at` unless it took time to judge)."""


@dataclass
class Behaviour:
    refuse_data: str | None = None  # e.g. "451 4.3.0 try later" or "550 5.1.1 no such user"
    refuse_rcpt: str | None = None
    data_delay: float = 0.0  # seconds to wait before answering the end of the content
    accept_at_reply: bool = False
    """False: the message is kept at the final dot, before the delay (a server that queues,
    then answers late). True: kept only if the 250 reaches a client still connected (RFC 5321:
    a message is the server's once it said 250)."""
    pipelining: bool = True  # advertise PIPELINING (RFC 2920) in the EHLO reply


class RecordingHandler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviour = Behaviour()
        self.judging = 0
        """Messages whose content arrived and whose final reply is not sent yet."""
        self.abandoned = 0
        """Messages whose client left before their 250 (not kept with accept_at_reply)."""
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
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), message, time.time())
        at_reply = self.behaviour.accept_at_reply
        if not at_reply:
            self._keep(received)
        if self.behaviour.data_delay:
            self.judging += 1
            try:
                await asyncio.sleep(self.behaviour.data_delay)
            finally:
                self.judging -= 1
        received.replied_at = time.time()
        if at_reply:
            if server.transport is None or server.transport.is_closing():
                self.abandoned += 1  # the client left before its 250: nothing was taken
            else:
                received.at = received.replied_at
                self._keep(received)
        return "250 Message accepted"

    def _keep(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)


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


def duplicates_outside_the_window(
    received: list[Received], killed: tuple[float, float], window: float
) -> dict[str, float]:
    """CONTRACT §5: an email is sent twice only when its sender died between the server's 250
    and the commit of its record. `killed`: when the kill was sent and when the process was
    seen dead. For each repeated Message-ID whose first 250 was not given between `window`
    seconds before the kill and the death, how long before the kill (negative: after) it was."""
    sent, dead = killed
    first: dict[str, Received] = {}
    repeated: set[str] = set()
    for mail in sorted(received, key=lambda r: r.at):
        message_id = str(mail.message["Message-ID"])
        if message_id in first:
            repeated.add(message_id)
        else:
            first[message_id] = mail
    gaps = {message_id: sent - first[message_id].replied_at for message_id in repeated}
    if gaps:
        print(
            f"\nrepeated emails: {len(gaps)}; their 250 came before the kill by (s): "
            f"{sorted(round(gap, 4) for gap in gaps.values())} (death seen {dead - sent:.4f} s "
            "after the kill)"
        )
    return {message_id: gap for message_id, gap in gaps.items() if not sent - dead <= gap <= window}


def start_smtp() -> SmtpServer:
    server = SmtpServer("127.0.0.1", free_port(), RecordingHandler())
    server.start()
    return server
