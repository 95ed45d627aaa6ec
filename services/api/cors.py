"""CORS for the web pages of CORS_ALLOW_ORIGINS (CONTRACT §8): their preflights get a 204
allowing `authorization`, `content-type` and `idempotency-key`, and every answer to them (the
refusals included, so that a page can read why) carries `Access-Control-Allow-Origin`.
Credentials (cookies) are never allowed: Flowline's callers say who they are with a key.

A pure ASGI middleware that runs before authentication: a preflight carries no key."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOWED_HEADERS = b"authorization, content-type, idempotency-key"
ALLOWED_METHODS = b"GET, POST, PUT, DELETE"
EXPOSED_HEADERS = "idempotent-replayed, retry-after, location"
MAX_AGE = b"600"


class Cors:
    def __init__(self, app: ASGIApp, *, origins: tuple[str, ...]) -> None:
        self.app = app
        self._origins = frozenset(origins)
        self._any = "*" in self._origins

    def allows(self, origin: str) -> bool:
        return self._any or origin in self._origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._origins:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1")
        if not origin or not self.allows(origin):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await _preflight(send, origin)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response = MutableHeaders(scope=message)
                response["access-control-allow-origin"] = origin
                response["access-control-expose-headers"] = EXPOSED_HEADERS
                response.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _preflight(send: Send, origin: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", ALLOWED_METHODS),
                (b"access-control-allow-headers", ALLOWED_HEADERS),
                (b"access-control-max-age", MAX_AGE),
                (b"vary", b"Origin"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
