"""The HTTP API: `create_app(settings)` builds it; the lifespan brings the database to the
current schema, opens the pools, and runs the outbox relay beside the requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from services.api import errors, intake
from services.api.auth import BearerToken
from services.api.body_limit import BodyLimit
from services.api.deps import Database
from services.api.routes import (
    dead_letters,
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
from workflow_core.persistence.pool import create_pool
from workflow_core.relay import FastPublisher, OutboxRelay
from workflow_core.settings import Settings

log = get_logger(__name__)


def create_app(settings: Settings, *, migrated: bool = False) -> FastAPI:
    """`migrated`: the database was brought to the current schema already (by __main__)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
        app.state.submit_rate = SubmitRate(redis, keys, settings.submit_rate_per_org)
        stop = asyncio.Event()
        relay_task = asyncio.create_task(relay.run(stop), name="outbox-relay")
        prune_task = asyncio.create_task(
            intake.forget_expired_keys(pool, stop), name="idempotency-key-prune"
        )
        log.info("api_started", host=settings.api_host, port=settings.api_port)
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(relay_task, prune_task, return_exceptions=True)
            await publisher.close()
            await relay.drain(timeout=5.0)  # what was accepted goes out before we exit
            await listener.__aexit__(None, None, None)
            await redis.aclose()
            await pool.close()
            log.info("api_stopped", published=relay.published)

    app = FastAPI(
        title="Flowline",
        version="0.1.0",
        summary="Form submissions in; emails, webhooks, tickets and tasks out.",
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry spans and metrics cost CPU on every request and
        # export nowhere unless a provider is configured; off.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    if settings.api_token:  # added last, so it runs first: a refused request is never read
        app.add_middleware(BearerToken, token=settings.api_token)
    errors.install(app)
    for module in (submissions, workflows, runs, tickets, tasks, dead_letters, health):
        _document_common_answers(module.router)
        app.include_router(module.router)
    return app


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
