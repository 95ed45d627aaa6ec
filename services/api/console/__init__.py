"""The console at /console: server-rendered pages for the people who run workflows, behind the
same API keys (a signed session cookie), reusing the JSON routes' checks and queries."""

from __future__ import annotations

from fastapi import FastAPI

from services.api.console import dead_letters, inbox, numbers, runs, sign_in, workflows
from services.api.console.identity import ConsoleConfig
from workflow_core.settings import Settings

ROUTERS = (
    sign_in.router,
    runs.router,
    inbox.router,
    workflows.router,
    dead_letters.router,
    numbers.router,
)


def install(app: FastAPI, settings: Settings) -> None:
    app.state.console = ConsoleConfig.from_settings(settings)
    for router in ROUTERS:
        app.include_router(router)
