"""The HTTP API: `create_app(settings)` builds it; the lifespan brings the database to the
current schema, opens the pools, and runs the outbox relay beside the requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from services.api import console, errors, intake, observe, openapi
from services.api.auth import OPEN_PATHS, OPEN_PREFIXES, Authenticate
from services.api.body_limit import BodyLimit
from services.api.cors import Cors
from services.api.deps import Database
from services.api.keys import KeyRing
from services.api.pages import approvals, forms
from services.api.routes import (
    api_keys,
    dead_letters,
    events,
    health,
    runs,
    submissions,
    tasks,
    tickets,
    workflows,
)
from workflow_core.adapters import streams
from workflow_core.adapters.ratelimit import SubmitRate
from workflow_core.adapters.streams import StreamKeys
from workflow_core.log import get_logger
from workflow_core.persistence.listen import Listener
from workflow_core.persistence.migrate import migrate
from workflow_core.persistence.pool import Pool, create_pool
from workflow_core.relay import FastPublisher, OutboxRelay
from workflow_core.sampler import Sampler
from workflow_core.settings import Settings
from workflow_core.version import version

log = get_logger(__name__)


def create_app(settings: Settings, *, migrated: bool = False) -> FastAPI:
    """`migrated`: the database was brought to the current schema already (by __main__)."""
    app = FastAPI(
        title="Flowline",
        version=version(),
        summary="Form submissions in; emails, webhooks, tickets and tasks out.",
        lifespan=_lifespan(settings, migrated),
        # FastAPI's built-in OpenTelemetry spans and metrics cost CPU on every request and
        # export nowhere unless a provider is configured; off.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        docs_url=None,  # openapi.install serves the pages without a CDN
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    # Added last, so it runs first: a refused request is never read.
    app.add_middleware(Authenticate)
    # Before authentication: preflights carry no key, and refusals need CORS headers too.
    app.add_middleware(Cors, origins=settings.cors_origins)
    errors.install(app)
    routers = (submissions, events, workflows, runs, tickets, tasks, dead_letters, api_keys, health)
    for module in (*routers, forms, approvals):
        _document_common_answers(module.router)
        app.include_router(module.router)
    console.install(app, settings)  # HTML pages, not in the OpenAPI document
    # Outside authentication: /metrics and the docs' assets are open (CONTRACT section 7).
    app.add_middleware(observe.Unguarded)
    # Outermost: it times and counts every answer, the other middleware's refusals included.
    app.add_middleware(observe.Observe, templates=lambda: app.openapi()["paths"])
    app.include_router(observe.router)
    openapi.install(app)
    return app


@dataclass
class _Running:
    """What the API opened at start, to close at the end."""

    pool: Pool
    listener: Listener
    redis: aioredis.Redis
    publisher: FastPublisher
    relay: OutboxRelay
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]


def _lifespan(
    settings: Settings, migrated: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = await _start(app, settings, migrated)
        log.info("api_started", host=settings.api_host, port=settings.api_port)
        try:
            yield
        finally:
            await _stop(running)
            log.info("api_stopped", published=running.relay.published)

    return lifespan


async def _start(app: FastAPI, settings: Settings, migrated: bool) -> _Running:
    """Open the pools and connections, put what the routes use on `app.state`, and start the
    loops that run beside the requests."""
    if not migrated:
        await migrate(settings)
    pool = await create_pool(
        settings, application_name="flowline-api", size=2 * settings.db_pool_size
    )
    listener = Listener(settings.postgres_dsn)
    redis = streams.client(settings)
    keys = StreamKeys.from_settings(settings)
    relay = OutboxRelay.from_settings(pool, redis, listener, settings)
    await listener.__aenter__()
    publisher = FastPublisher(pool, redis, keys)
    app.state.settings = settings
    app.state.database = Database(
        pool,
        settings.api_db_timeout_seconds,
        publisher,
        statement_timeout=settings.db_statement_timeout_seconds,
    )
    app.state.redis, app.state.keys, app.state.relay = redis, keys, relay
    app.state.key_ring = KeyRing(pool, redis, keys, admin_key=settings.admin_key)
    if app.state.key_ring.open:
        log.warning(
            "api_open",
            hint="no API_ADMIN_KEY: every request acts as the operator; set one before "
            "anyone else can reach this port",
        )
    app.state.submit_rate = SubmitRate(redis, keys, settings.submit_rate_per_org)
    stop = asyncio.Event()
    loops = {
        "outbox-relay": relay.run(stop),
        "idempotency-key-prune": intake.forget_expired_keys(
            pool, stop, events_kept=timedelta(seconds=settings.event_retention_seconds)
        ),
        "key-revocations": app.state.key_ring.hear_revocations(stop),
        "metrics-sampler": Sampler(pool, redis, keys).run(stop, settings.metrics_sample_seconds),
    }
    tasks = [asyncio.create_task(loop, name=name) for name, loop in loops.items()]
    return _Running(pool, listener, redis, publisher, relay, stop, tasks)


async def _stop(running: _Running) -> None:
    running.stop.set()
    await asyncio.gather(*running.tasks, return_exceptions=True)
    await running.publisher.close()
    await running.relay.drain(timeout=5.0)  # what was accepted goes out before we exit
    await running.listener.__aexit__(None, None, None)
    await running.redis.aclose()
    await running.pool.close()


def _document_common_answers(router: APIRouter) -> None:
    """Put the answers the middleware and error handlers give into the OpenAPI description:
    413 wherever a body is taken, 503 wherever the database or Redis is asked."""
    for route in router.routes:
        if not isinstance(route, APIRoute) or route.path == "/healthz":
            continue
        if (route.methods or set()) & {"POST", "PUT", "PATCH"}:
            route.responses.setdefault(
                413, {"description": "the body is larger than API_MAX_BODY_BYTES"}
            )
        route.responses.setdefault(503, {"description": "PostgreSQL or Redis does not answer"})
        if route.path not in OPEN_PATHS and not route.path.startswith(OPEN_PREFIXES):
            route.responses.setdefault(401, {"description": "no API key, or an unknown one"})
            route.responses.setdefault(
                403, {"description": "the key may not do this (scope, organisation)"}
            )
