"""`python -m services.api`: serve the HTTP API on API_HOST:API_PORT."""

from __future__ import annotations

import uvicorn

from services.api.app import create_app
from workflow_core.log import configure_logging
from workflow_core.settings import load_settings


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level == "DEBUG",
        loop="auto",
        timeout_graceful_shutdown=int(settings.worker_shutdown_grace_seconds),
    )


if __name__ == "__main__":
    main()
