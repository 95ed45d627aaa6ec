"""Schema management: the database is created when missing, and replicas that migrate at the
same moment are safe (advisory lock)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from sqlalchemy.engine import make_url

from tests.support.services import Servers
from workflow_core.persistence.migrate import migrate
from workflow_core.settings import load_settings


async def test_concurrent_migrations_create_and_migrate_a_missing_database(
    servers: Servers,
) -> None:
    name = f"flowline_test_missing_{uuid.uuid4().hex[:8]}"
    url = make_url(servers.database_url).set(database=name).render_as_string(hide_password=False)
    settings = load_settings(_env_file=None, database_url=url)
    admin = (
        make_url(servers.database_url)
        .set(database="postgres")
        .render_as_string(hide_password=False)
    )
    try:
        await asyncio.gather(*(migrate(settings) for _ in range(3)))
        connection = await asyncpg.connect(url)
        try:
            version = await connection.fetchval("SELECT version_num FROM alembic_version")
            tables = {
                r["tablename"]
                for r in await connection.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
        finally:
            await connection.close()
        assert version
        assert {
            "submissions",
            "workflows",
            "workflow_versions",
            "outbox",
            "runs",
            "run_steps",
            "run_actions",
            "effects",
            "tasks",
            "tickets",
            "timers",
        } <= tables
    finally:
        connection = await asyncpg.connect(admin)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()
