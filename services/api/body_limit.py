"""Refuse request bodies over API_MAX_BODY_BYTES with a JSON 413, whether the client declared
the length or streams the body in chunks. A pure ASGI middleware (nothing is buffered); ours
rather than the framework's because that one answers a declared oversize length in plain text.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(receive, send)
            return
        received = 0
        started = refused = ended = False

        async def counting_receive() -> Message:
            nonlocal received, refused, ended
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                ended = not message.get("more_body", False)
                if received > self.max_bytes and not started:
                    # The framework would turn any exception raised here into its own
                    # "cannot parse the body" answer: remember, and answer once it gave up.
                    refused = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 goes out instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, counting_receive, tracking_send)
        if refused:
            await self._refuse(receive, send, body_read=ended)

    async def _refuse(self, receive: Receive, send: Send, *, body_read: bool = False) -> None:
        """Answer 413. The rest of the body is read (and dropped, up to a bound) before the
        answer is finished, so the client completes its upload and reads the 413 instead of
        meeting a connection reset."""
        body = orjson.dumps(
            {"detail": f"request body is larger than {self.max_bytes} bytes (API_MAX_BODY_BYTES)"}
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        budget = 0 if body_read else 16 * self.max_bytes
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while budget > 0:
                    message = await receive()
                    budget -= len(message.get("body", b""))
                    if message["type"] != "http.request" or not message.get("more_body"):
                        break
        await send({"type": "http.response.body", "body": body})
