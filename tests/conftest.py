"""Fixtures shared by the integration and end-to-end tests.

Isolation is by name, never by wiping shared servers: each test run migrates its own template
database, every test that needs a database gets a fresh copy of it (CREATE DATABASE ...
TEMPLATE, dropped afterwards), and every test gets its own stream name (its keys deleted
afterwards). Unit tests use none of this.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.support.http_receiver import RECEIVER_HOST
from tests.support.net import free_port
from tests.support.processes import Service, start, wait_http
from tests.support.resolver import FakeResolver, fake_resolver, guard_loopback
from tests.support.services import Servers, find_servers
from tests.support.smtp import SmtpServer, start_smtp
from workflow_core.adapters.streams import StreamKeys
from workflow_core.persistence.migrate import migrate
from workflow_core.persistence.pool import Pool, create_pool
from workflow_core.settings import Settings, load_settings

RUN_TOKEN = uuid.uuid4().hex[:8]


def _url_for(servers: Servers, database: str) -> str:
    url = make_url(servers.database_url.replace("+asyncpg", "")).set(database=database)
    return url.render_as_string(hide_password=False)


def _admin_dsn(servers: Servers) -> str:
    return _url_for(servers, "postgres")


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    found, reason, containers = find_servers()
    if found is None:
        pytest.exit(reason, returncode=2)
    yield found
    for container in containers:
        container.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def template_database(servers: Servers) -> AsyncIterator[str]:
    """A database at the current schema, copied for each test that needs one."""
    name = f"flowline_test_{RUN_TOKEN}_template"
    await migrate(load_settings(database_url=_url_for(servers, name), _env_file=None))
    yield name
    await _drop(servers, name)


async def _drop(servers: Servers, name: str) -> None:
    connection = await asyncpg.connect(_admin_dsn(servers))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _clone(servers: Servers, template: str) -> str:
    name = f"flowline_test_{RUN_TOKEN}_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(_admin_dsn(servers))
    try:
        await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await connection.close()
    return name


@pytest.fixture
async def database_url(servers: Servers, template_database: str) -> AsyncIterator[str]:
    name = await _clone(servers, template_database)
    yield _url_for(servers, name)
    await _drop(servers, name)


@pytest.fixture
async def stream_name(servers: Servers) -> AsyncIterator[str]:
    """The test's own stream name; every Redis key under it is deleted afterwards."""
    name = f"flowline-test:{RUN_TOKEN}:{uuid.uuid4().hex[:8]}"
    yield name
    client = aioredis.Redis(
        host=servers.redis_host, port=servers.redis_port, password=servers.redis_password or None
    )
    await delete_stream_keys(client, name)
    await client.aclose()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = start_smtp()
    yield server
    server.stop()


@pytest.fixture
async def resolver(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    """Lookups of the names a test gives answers for go to it (on the running event loop)."""
    return fake_resolver(monkeypatch)


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """HTTP connections may go to loopback only (a test that makes a name resolve to a private
    address must never send anything there); returns the addresses connected to."""
    return guard_loopback(monkeypatch)


SettingsFactory = Callable[..., Settings]
# The API refuses to start with an operator's key and no TASK_LINK_SECRET.
TEST_LINK_SECRET = "test-task-link-secret-" + "0123456789" * 2


@pytest.fixture
def make_settings(
    servers: Servers, database_url: str, stream_name: str, smtp: SmtpServer, tmp_path: Path
) -> SettingsFactory:
    """Settings for this test's database, stream and SMTP server; keywords override."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "redis_host": servers.redis_host,
            "redis_port": servers.redis_port,
            "redis_password": servers.redis_password,
            "redis_stream_name": stream_name,
            "smtp_host": smtp.host,
            "smtp_port": smtp.port,
            "log_level": "WARNING",
            "claim_idle_seconds": 2.0,
            "claim_interval_seconds": 0.5,
            "worker_block_ms": 200,
            "action_retry_initial_seconds": 0.2,
            "action_retry_max_seconds": 1.0,
            "worker_shutdown_grace_seconds": 5.0,
            # The tests' webhook receivers listen there (tests/support/http_receiver.py).
            "webhook_allowed_hosts": RECEIVER_HOST,
            # Tests run side by side: a worker serves metrics only where a test gives a port.
            "worker_metrics_port": 0,
            "task_link_secret": TEST_LINK_SECRET,
            # A worker's notes of sent emails stay with the test, not in the machine's /tmp.
            "worker_spool_dir": str(tmp_path / "spool"),
        }
        values.update(overrides)
        return load_settings(_env_file=None, **values)

    return build


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """SQLAlchemy, for the tests to look at tables (Flowline itself runs on asyncpg pools)."""
    engine = create_async_engine(
        settings.sqlalchemy_url,
        json_serializer=lambda value: orjson.dumps(value).decode(),
        json_deserializer=orjson.loads,
    )
    yield engine
    await engine.dispose()


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[Pool]:
    """The plain asyncpg pool the hot paths use."""
    created = await create_pool(settings, application_name="flowline-tests", size=4)
    yield created
    await created.close()


@pytest.fixture
async def redis(servers: Servers, stream_name: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(
        host=servers.redis_host,
        port=servers.redis_port,
        password=servers.redis_password or None,
        decode_responses=True,
    )
    yield client
    await client.aclose()


async def delete_stream_keys(client: aioredis.Redis, stream_name: str) -> None:
    """Every key the test's stream name owns (the stream, its dead letters, its notes ...):
    a test leaves nothing behind, and touches nothing else."""
    doomed = [stream_name]
    async for key in client.scan_iter(match=f"{stream_name}:*", count=500):
        doomed.append(key)
    await client.delete(*doomed)


@pytest.fixture
def keys(settings: Settings) -> StreamKeys:
    return StreamKeys.from_settings(settings)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the environment of a child process."""
    env = {}
    for name, value in settings.model_dump().items():
        env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


class Stack:
    """The API and workers of one test, as processes."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.services: list[Service] = []

    def env(self, **overrides: Any) -> dict[str, str]:
        env = settings_env(self.settings)
        env.update({"API_HOST": "127.0.0.1", "API_PORT": str(self.api_port)})
        env.update({key.upper(): str(value) for key, value in overrides.items()})
        return env

    def start_api(self, **overrides: Any) -> Service:
        service = start("services.api", self.env(**overrides), self.log_dir, "api")
        self.services.append(service)
        wait_http(service, f"{self.base_url}/healthz")
        return service

    def start_worker(self, name: str = "worker", **overrides: Any) -> Service:
        overrides.setdefault("WORKER_CONSUMER_NAME", f"{name}-{uuid.uuid4().hex[:6]}")
        service = start("services.worker", self.env(**overrides), self.log_dir, name)
        self.services.append(service)
        return service

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.log()[-3000:]}" for s in self.services)

    def close(self) -> None:
        for service in self.services:
            with contextlib.suppress(Exception):
                service.stop(timeout=10)


@pytest.fixture
def stack(settings: Settings, log_dir: Path, redis: aioredis.Redis) -> Iterator[Stack]:
    stack = Stack(settings, log_dir)
    yield stack
    stack.close()


@contextlib.asynccontextmanager
async def module_stack(
    servers: Servers, template_database: str, log_dir: Path, **settings_values: Any
) -> AsyncIterator[Stack]:
    """A stack of processes on a database and stream of its own (for a whole module)."""
    name = await _clone(servers, template_database)
    stream = f"flowline-test:{RUN_TOKEN}:{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        _env_file=None,
        database_url=_url_for(servers, name),
        redis_host=servers.redis_host,
        redis_port=servers.redis_port,
        redis_password=servers.redis_password,
        redis_stream_name=stream,
        log_level="WARNING",
        **{
            "webhook_allowed_hosts": RECEIVER_HOST,
            "task_link_secret": TEST_LINK_SECRET,
            "worker_spool_dir": str(log_dir / "spool"),
            **settings_values,
        },
    )
    stack = Stack(settings, log_dir)
    try:
        yield stack
    finally:
        stack.close()
        client = aioredis.Redis(
            host=servers.redis_host,
            port=servers.redis_port,
            password=servers.redis_password or None,
        )
        await delete_stream_keys(client, stream)
        await client.aclose()
        await _drop(servers, name)


@pytest.fixture(scope="module")
async def shared_api(
    servers: Servers, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """One API process for a whole module, on its own database and stream, for tests that
    only read and write through HTTP and do not care what else is in the database."""
    async with module_stack(servers, template_database, tmp_path_factory.mktemp("logs")) as stack:
        stack.start_api()
        yield stack
