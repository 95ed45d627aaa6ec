"""Every request but the open ones says who it is (`Authorization: Bearer <key>`, CONTRACT
§7): the key ring (keys.py) turns the key into a `Principal`, kept on the request's state for
the routes; an unknown or missing key is a JSON 401 here. A pure ASGI middleware, so a refused
request costs no routing and its body is never read."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.keys import KeyRing, bearer
from workflow_core.errors import Unavailable

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"})
# The API docs' own files, the form endpoint (its key is in its path: CONTRACT §8), the task
# pages of the assignees' emails (their signed token is in the path: pages/approvals.py) and
# the console, which checks its own session cookie (services/api/console/identity.py).
OPEN_PREFIXES = ("/docs/", "/redoc/", "/static/", "/f/", "/t/", "/console/")
_REFUSAL = orjson.dumps(
    {"detail": "missing or unknown API key: send the header `Authorization: Bearer <key>`"}
)
_UNAVAILABLE = orjson.dumps({"detail": "database unavailable: the API key cannot be checked"})


def is_open(scope: Scope) -> bool:
    path: str = scope["path"]
    return (
        path in OPEN_PATHS
        or path == "/console"
        or path.startswith(OPEN_PREFIXES)
        or (scope["method"] == "OPTIONS" and _is_preflight(scope))
    )


def _is_preflight(scope: Scope) -> bool:
    return any(name == b"access-control-request-method" for name, _ in scope["headers"])


class Authenticate:
    """Needs the app's `state.key_ring` (made by the lifespan, with the pools)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope):
            await self.app(scope, receive, send)
            return
        ring: KeyRing = scope["app"].state.key_ring
        token = bearer(dict(scope["headers"]).get(b"authorization"))
        try:
            principal = await ring.principal(token)
        except Unavailable:
            await _answer(send, 503, _UNAVAILABLE, [(b"retry-after", b"1")])
            return
        if principal is None:
            await _answer(send, 401, _REFUSAL, [(b"www-authenticate", b"Bearer")])
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["key_id"] = str(principal.key_id) if principal.key_id else "operator"
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
