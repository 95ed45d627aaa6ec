"""The API in this process: `create_app` with the test's settings, its lifespan run for real
(pools, relay, housekeeping), and an httpx client that calls it over ASGI. For tests that need
to reach inside (hold the pool's connections, time answers precisely) or that want many
concurrent requests without a process in between."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from services.api.app import create_app
from services.api.deps import Database
from workflow_core.settings import Settings


@dataclass(frozen=True)
class InProcessApi:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def database(self) -> Database:
        database: Database = self.app.state.database
        return database


@contextlib.asynccontextmanager
async def in_process_api(settings: Settings) -> AsyncIterator[InProcessApi]:
    app = create_app(settings, migrated=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://flowline.test", timeout=30
        ) as client:
            yield InProcessApi(app, client)
