"""Bring a database to the current schema: create it if missing (when the role may), then run
the Alembic migrations under a PostgreSQL advisory lock, so replicas starting together are
safe. `python -m workflow_core.persistence.migrate` (or `make migrate`) does it alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from workflow_core.log import configure_logging, get_logger
from workflow_core.settings import Settings, load_settings

MIGRATIONS = Path(__file__).parent / "migrations"
# An arbitrary constant: every Flowline process takes this lock while it migrates.
_LOCK_KEY = 0x466C6F776C696E65  # "Flowline"

log = get_logger(__name__)


async def ensure_database(async_url: str, connect_timeout: float = 5.0) -> bool:
    """Create the database named in the URL if it does not exist. True when it was created."""
    url = make_url(async_url)
    name = url.database
    assert name, "the database URL names no database"
    dsn = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    try:
        connection = await asyncpg.connect(dsn, timeout=connect_timeout)
    except asyncpg.InvalidCatalogNameError:
        connection = await asyncpg.connect(
            dsn.rsplit("/", 1)[0] + "/template1", timeout=connect_timeout
        )
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await connection.execute(f"CREATE DATABASE {quoted}")
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # another replica created it first
        log.info("database_created", database=name)
        return True
    finally:
        await connection.close()


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        # Held until this transaction ends: the others wait, then find nothing left to do.
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        await connection.run_sync(_upgrade)


async def migrate(settings: Settings) -> None:
    await ensure_database(settings.sqlalchemy_url, settings.db_connect_timeout_seconds * 5)
    engine = create_async_engine(settings.sqlalchemy_url, poolclass=None)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


class DatabaseUnusable(SystemExit):
    """The database cannot be reached or brought to the schema; the message says why."""


async def migrate_at_start(settings: Settings) -> None:
    """`migrate`, for a process starting up: a database it cannot reach or use stops it with
    one line naming DATABASE_URL (password hidden); the traceback is logged at DEBUG only."""
    try:
        await migrate(settings)
    except Exception as error:
        log.debug("migration_failed", exc_info=True)
        url = make_url(settings.sqlalchemy_url).set(drivername="postgresql")
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise DatabaseUnusable(
            f"flowline: cannot use the database DATABASE_URL="
            f"{url.render_as_string(hide_password=True)}: {reason}"
        ) from None


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(migrate_at_start(settings))
    log.info("database_migrated", database=make_url(settings.sqlalchemy_url).database)


if __name__ == "__main__":
    main()
