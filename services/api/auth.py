"""An optional shared token for the API (API_TOKEN). When it is set, every request except the
health checks and the API's description must carry `Authorization: Bearer <token>`; others get
a JSON 401. Flowline has no users of its own: this keeps whoever else can reach the port from
reading forms or changing workflows. A pure ASGI middleware, so a refused request costs no
routing and its body is never read.
"""

from __future__ import annotations

import hmac

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/redoc"})
_REFUSAL = orjson.dumps(
    {"detail": "missing or wrong API token: send the header `Authorization: Bearer <API_TOKEN>`"}
)


class BearerToken:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self._token = app, token.encode()

    def allows(self, authorization: bytes) -> bool:
        scheme, _, token = authorization.strip().partition(b" ")
        # Compared in constant time, so the answer's timing does not spell out the token.
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.allows(dict(scope["headers"]).get(b"authorization", b"")):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_REFUSAL)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _REFUSAL})
