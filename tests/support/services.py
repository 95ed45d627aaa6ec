"""Finding PostgreSQL and Redis for the tests: from the environment when they answer, else
with testcontainers when Docker is available, else a one-line reason to stop."""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Servers:
    database_url: str  # postgresql:// URL of the server (its database part is replaced per run)
    redis_host: str
    redis_port: int
    redis_password: str = ""


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    return shutil.which("docker") is not None and os.path.exists("/var/run/docker.sock")


def find_servers() -> tuple[Servers | None, str, list[object]]:
    """(servers, reason when None, containers to stop at the end)."""
    database_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    parts = urlsplit(database_url.replace("+asyncpg", ""))
    pg_host, pg_port = parts.hostname or "127.0.0.1", parts.port or 5432
    redis_host = os.environ.get("REDIS_HOST", "127.0.0.1")
    redis_port = int(os.environ.get("REDIS_PORT", "6379"))
    if _answers(pg_host, pg_port) and _answers(redis_host, redis_port):
        return (
            Servers(database_url, redis_host, redis_port, os.environ.get("REDIS_PASSWORD", "")),
            "",
            [],
        )
    if _docker_available():
        from testcontainers.postgres import PostgresContainer
        from testcontainers.redis import RedisContainer

        postgres = PostgresContainer("postgres:15", driver=None).start()
        redis = RedisContainer("redis:7").start()
        return (
            Servers(
                postgres.get_connection_url(),
                redis.get_container_host_ip(),
                int(redis.get_exposed_port(6379)),
            ),
            "",
            [postgres, redis],
        )
    return (
        None,
        (
            f"PostgreSQL ({pg_host}:{pg_port}) and Redis ({redis_host}:{redis_port}) must answer "
            "(set DATABASE_URL / REDIS_HOST / REDIS_PORT), or Docker must be available for "
            "testcontainers; start them and run again."
        ),
        [],
    )
