"""What the API tells its operator: `GET /metrics` (Prometheus text), and for every request a
count and a duration by method, route template and status, and one access log line.

`Observe` is a pure ASGI middleware added outermost, so it also sees the answers other
middleware gives (401, 413) and clears the log context at each request's start. Labels are
bounded: the route is the matched template (`/runs/{run_id}`, never the raw path), `unmatched`
when none matched; an unknown method is `OTHER`. The access line names the API key's id
(`request.state.key_id`) when authentication set one, never the key itself. With
OTEL_ENABLED each request is also a span (`POST /submit`), and its lines carry its trace_id.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import Counter, Histogram
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.routing import Mount, Route, Router, compile_path
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import clear_contextvars

from services.api.openapi import ASSETS, STATIC_DIR
from workflow_core import metrics, tracing
from workflow_core.log import get_logger

log = get_logger("services.api.access")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    openapi_extra={"security": []},
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
        }
    },
)
async def get_metrics() -> Response:
    """This process's metrics (every series named `flowline_*`): HTTP requests, submissions,
    and the sampled outbox, stream and runs gauges."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


class Unguarded:
    """Serves what CONTRACT section 7 keeps open whatever authentication is in place: /metrics
    (for Prometheus) and the docs pages' static scripts and styles (a browser cannot send a key
    for a <script>). Added outside the authentication middleware; everything else passes on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        routes = [
            Route("/metrics", _metrics_page, methods=["GET"]),
            Mount(ASSETS, StaticFiles(directory=STATIC_DIR), name="docs-assets"),
        ]
        self._open = ExceptionMiddleware(Router(routes))  # a missing file: a plain 404

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/metrics" or path.startswith(ASSETS + "/")):
            await self._open(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def _metrics_page(_: Request) -> Response:
    return await get_metrics()


class Observe:
    def __init__(self, app: ASGIApp, templates: Callable[[], Iterable[str]]) -> None:
        """`templates`: the app's route templates (asked once, when first needed)."""
        self.app, self._templates = app, templates
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clear_contextvars()
        if tracing.ENABLED:
            await self._traced(scope, receive, send)
        else:
            await self._observed(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> tuple[str, int]:
        """Answer the request, then count and log it; its (route template, status)."""
        started = time.perf_counter()
        status = 500  # what the server answers when the app raised before answering

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            route = self._record(scope, status, time.perf_counter() - started)
        return route, status

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request in a span of its own (OTEL_ENABLED), continuing the client's trace
        when it sent a `traceparent`; named `<method> <route template>` once routed."""
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        attributes = {"http.request.method": method, "url.path": scope.get("path", "")}
        with tracing.span(
            method, attributes, kind=tracing.SpanKind.SERVER, parent=_traceparent(scope)
        ) as span:
            route, status = await self._observed(scope, receive, send)
            if span is not None:
                span.update_name(f"{method} {route}")
                span.set_attributes({"http.route": route, "http.response.status_code": status})
                if status >= 500:
                    span.set_status(tracing.Status(tracing.StatusCode.ERROR, f"HTTP {status}"))

    def _record(self, scope: Scope, status: int, seconds: float) -> str:
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        route = self._template(scope)
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            labels = (method, route, str(status))
            series = (
                metrics.HTTP_REQUESTS.labels(*labels),
                metrics.HTTP_DURATION.labels(*labels),
            )
            self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)
        state: dict[str, Any] = scope.get("state") or {}
        fields: dict[str, Any] = {}
        if (key_id := state.get("key_id")) is not None:
            fields["key_id"] = str(key_id)
        log.info(
            "http_request",
            method=method,
            route=route,
            status=status,
            duration_ms=round(seconds * 1000, 3),
            **fields,
        )
        return route

    def _template(self, scope: Scope) -> str:
        """The route template the request matched, or the one it would have matched when it was
        answered before routing (a 401, a 413)."""
        template = getattr(scope.get("route"), "path_format", None)
        if template:
            return str(template)
        if self._patterns is None:
            self._patterns = [(compile_path(t)[0], t) for t in self._templates()]
        path = scope["path"]
        return next((t for pattern, t in self._patterns if pattern.match(path)), UNMATCHED)


def _traceparent(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"traceparent":
            return bytes(value).decode("latin-1")
    return None
