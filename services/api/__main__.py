"""`python -m services.api`: serve the HTTP API on API_HOST:API_PORT."""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from types import FrameType

import uvicorn

from services.api import cli, workflows_cli
from services.api.app import create_app
from services.api.http_protocol import OneWritePerResponse
from workflow_core import tracing
from workflow_core.log import configure_logging, get_logger, logging_config
from workflow_core.persistence.migrate import migrate_at_start
from workflow_core.runtime import freeze_startup_objects
from workflow_core.settings import Settings, SettingsError, links_off_warning, load_settings
from workflow_core.version import command_line

log = get_logger("services.api")


def refuse_to_be_open(settings: Settings) -> None:
    """Without an operator's key the API is open to whoever reaches it: only on loopback,
    unless API_ALLOW_OPEN says the operator means it."""
    if settings.admin_key or settings.api_allow_open or _loopback(settings.api_host):
        return
    raise SettingsError(
        f"flowline: invalid settings: API_HOST={settings.api_host} is reachable from other "
        "machines and no API_ADMIN_KEY is set, so anyone there would own this API; set "
        "API_ADMIN_KEY (or API_ALLOW_OPEN=true to mean it)"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down, so the process would end "killed
    by signal"; after a graceful stop Flowline exits 0 instead."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list) and sig in captured:
            captured.remove(sig)


def main() -> None:
    if sys.argv[1:2] == ["keys"]:
        cli.main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["workflows"]:
        workflows_cli.main(sys.argv[2:])
        return
    command_line("python -m services.api", "Serve Flowline's HTTP API.").parse_args()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    refuse_to_be_open(settings)
    tracing.configure(settings.otel_enabled, "flowline-api")
    if warning := links_off_warning(settings):
        log.warning("task_links_off", detail=warning)
    # Before uvicorn: a database that cannot be used stops the process with one line (inside
    # uvicorn's start-up it would be a page of traceback).
    asyncio.run(migrate_at_start(settings))
    config = uvicorn.Config(
        create_app(settings, migrated=True),
        host=settings.api_host,
        port=settings.api_port,
        http=OneWritePerResponse,
        # uvicorn's lines through Flowline's formatter (JSON under LOG_FORMAT=json); the access
        # line of each request is Flowline's own (observe.py), with the route template.
        log_config=logging_config(settings.log_level, settings.log_format),
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=int(settings.worker_shutdown_grace_seconds),
    )
    server = _Server(config)
    config.load()  # import and build everything now, then keep it out of the collector's way
    freeze_startup_objects()
    try:
        server.run()
    finally:
        tracing.shutdown()  # the last spans go out before the process ends
    sys.exit(0 if server.started else 3)  # 3: it never started (uvicorn's convention)


if __name__ == "__main__":
    main()
