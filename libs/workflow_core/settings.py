"""Every setting Flowline reads, with its default and its bounds.

Settings come from the environment or a `.env` file in the working directory. They are built
once, in each process's `main()`, and passed down; nothing reads the environment elsewhere.
A bad value stops the process with one line naming the setting (`load_settings`).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
from email.utils import parseaddr
from functools import cached_property
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workflow_core.destinations import AllowedHosts
from workflow_core.engine.limits import Limits

PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )

    # PostgreSQL
    database_url: str = "postgresql://postgres@localhost:5432/flowline"
    db_pool_size: PositiveInt = 10
    db_connect_timeout_seconds: PositiveFloat = 2.0
    db_statement_timeout_seconds: PositiveFloat = 10.0

    # Redis
    redis_host: str = "localhost"
    redis_port: Port = 6379
    redis_db: Annotated[int, Field(ge=0)] = 0
    redis_password: str = ""
    redis_stream_name: Annotated[str, Field(min_length=1)] = "workflow_events"
    redis_consumer_group: Annotated[str, Field(min_length=1)] = "flowline"
    redis_max_connections: PositiveInt = 64
    redis_socket_timeout_seconds: PositiveFloat = 5.0

    # SMTP
    smtp_host: str = "localhost"
    smtp_port: Port = 1025
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_use_tls: bool = False
    smtp_timeout_seconds: PositiveFloat = 10.0
    # The reply to the end of DATA: RFC 5321 (4.5.3.2.6) asks clients to wait 10 minutes.
    smtp_data_timeout_seconds: PositiveFloat = 600.0
    smtp_pool_size: PositiveInt = 8
    from_email: Annotated[str, Field(min_length=3)] = "flowline@localhost"

    # API
    api_host: str = "127.0.0.1"
    api_port: Port = 8000
    api_max_body_bytes: PositiveInt = 1024 * 1024
    api_db_timeout_seconds: PositiveFloat = 1.0
    # The operator's key (every organisation). Unset: the API is open, and only on loopback
    # unless API_ALLOW_OPEN says otherwise. API_TOKEN is its old name, still read.
    api_admin_key: str = ""
    api_token: str = ""
    api_allow_open: bool = False
    # The console (/console): what signs its session cookies (empty: derived from
    # API_ADMIN_KEY, so rotating that key ends every session) and how long a session lasts.
    console_session_secret: str = ""
    console_session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 8.0
    # Submissions per second per organisation (a token bucket in Redis, bursts of twice
    # this); 0 = no limit.
    submit_rate_per_org: Annotated[float, Field(ge=0, le=1_000_000)] = 200.0
    max_workflows_per_org: PositiveInt = 1000
    # Web pages (CONTRACT §8): origins that get CORS answers (comma-separated, `*` allowed).
    cors_allow_origins: str = ""
    # Where people reach the API: the links in task emails start with it. Empty: from
    # API_HOST and API_PORT.
    public_base_url: str = ""
    # Signs the approval links in task emails; the API and every worker need the same one.
    # Required (32+ characters) when API_ADMIN_KEY is set; without either, a development
    # secret is derived from DATABASE_URL.
    task_link_secret: str = ""
    # How long an approval link works when its task has no due time.
    task_link_ttl_seconds: Annotated[float, Field(ge=60, le=366 * 86_400)] = 7 * 86_400.0

    # Worker
    worker_concurrency: PositiveInt = 32
    worker_batch_size: PositiveInt = 64
    worker_block_ms: PositiveInt = 2000
    worker_consumer_name: str = ""
    worker_shutdown_grace_seconds: PositiveFloat = 20.0
    claim_idle_seconds: PositiveFloat = 30.0
    claim_interval_seconds: PositiveFloat = 5.0
    delivery_limit: PositiveInt = 5
    dead_letter_replay_limit: PositiveInt = 3
    dead_letter_max_length: PositiveInt = 10_000
    # Liveness of a worker (the owner of its email reservations): a heartbeat in PostgreSQL.
    worker_heartbeat_seconds: PositiveFloat = 5.0
    worker_dead_after_seconds: PositiveFloat = 30.0
    # A file the worker touches at each heartbeat while it runs, for a container's health check
    # (python -m services.worker.healthcheck); empty: none.
    worker_health_file: str = ""
    # Where a worker notes the emails it sent while neither PostgreSQL nor Redis could take
    # the record (adapters/sent_spool.py); a restarted worker reads it. Empty: a directory
    # `flowline-spool` in the system's temporary directory.
    worker_spool_dir: str = ""
    run_step_budget: PositiveInt = 100

    # Limits against amplification (engine/limits.py): what one submission can make happen.
    max_recipients_per_email: PositiveInt = 50
    max_emails_per_run: PositiveInt = 25
    max_rendered_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 262_144
    max_dry_run_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = 4 * 1_048_576

    # Stream housekeeping (every worker, every HOUSEKEEPING_INTERVAL_SECONDS)
    housekeeping_interval_seconds: PositiveFloat = 60.0
    stream_retention_seconds: Annotated[float, Field(ge=0)] = 3600.0
    consumer_gc_seconds: PositiveFloat = 3600.0
    # Finished runs (completed, failed, cancelled) older than this many days are purged with
    # their history and the submissions no other run uses, by every worker's housekeeping.
    run_retention_days: Annotated[int, Field(ge=0, le=36_500)] = 0  # 0: kept for ever

    # Actions: how a failed action is retried unless its definition says otherwise
    # The same bounds as a definition's own `retry` (definitions/models.py RetryPolicy).
    action_max_attempts: Annotated[int, Field(ge=1, le=100)] = 10
    action_retry_initial_seconds: Annotated[float, Field(gt=0, le=86_400)] = 1.0
    action_retry_max_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    webhook_timeout_seconds: PositiveFloat = 10.0
    # A JSON answer up to this size lands parsed in `steps.<id>.response.json` (0: never).
    webhook_response_max_bytes: Annotated[int, Field(ge=0, le=1_048_576)] = 65_536
    # Hosts webhooks may call although their addresses are internal (loopback, private ...):
    # comma-separated names, addresses or CIDR networks. See workflow_core/destinations.py.
    webhook_allowed_hosts: str = ""

    # Outbox relay (runs in every API and worker process)
    outbox_batch_size: PositiveInt = 500
    outbox_poll_seconds: PositiveFloat = 1.0
    outbox_grace_seconds: Annotated[float, Field(ge=0)] = 2.0
    outbox_retention_seconds: Annotated[float, Field(ge=0)] = 7 * 24 * 3600.0
    # Events posted to /events are kept this long (at least a day, like an Idempotency-Key):
    # a wait_for_event step finds an event that came before it only while it is kept.
    event_retention_seconds: Annotated[float, Field(ge=86_400, le=10 * 366 * 86_400)] = (
        7 * 24 * 3600.0
    )
    # An event published and taken by no worker within this long is published again.
    event_reconcile_seconds: PositiveFloat = 60.0

    # Schedules (every worker): how often a worker looks for due ticks at most, and how many
    # missed ticks a `catch_up` schedule fires after an outage (the latest ones).
    schedule_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    schedule_catch_up_limit: Annotated[int, Field(ge=1, le=10_000)] = 100

    # Metrics (Prometheus): the API serves /metrics on its own port; each worker on this one.
    worker_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464  # 0: no server
    worker_metrics_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    # How often each process reads the shared gauges (outbox, stream, runs by status).
    metrics_sample_seconds: Annotated[float, Field(ge=1, le=3600)] = 10.0

    # Traces (OpenTelemetry): off unless asked for. Where they go, the service name and the
    # sampler are the SDK's standard OTEL_* variables, read from the environment by the SDK.
    otel_enabled: bool = False

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
            raise ValueError("must be a postgresql:// URL")
        if not urlsplit(value).path.strip("/"):
            raise ValueError("must name a database, e.g. postgresql://postgres@localhost/flowline")
        return value

    @field_validator("from_email")
    @classmethod
    def _address(cls, value: str) -> str:
        address = parseaddr(value)[1]
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", address):
            raise ValueError("must be an email address such as flowline@example.com")
        return value

    @field_validator("api_admin_key")
    @classmethod
    def _admin_key(cls, value: str) -> str:
        return _secret(
            value,
            24,
            "(make one with "
            "`python -c \"import secrets; print('fl_admin_' + secrets.token_urlsafe(32))\"`), "
            "or empty for an open API on loopback",
        )

    @field_validator("api_token")
    @classmethod
    def _token(cls, value: str) -> str:
        return _secret(value, 16, "(API_TOKEN is the old name of API_ADMIN_KEY: set that instead)")

    @field_validator("console_session_secret")
    @classmethod
    def _session_secret(cls, value: str) -> str:
        return _secret(
            value, 32, f"(make one with {_MAKE_SECRET}), or empty to derive it from API_ADMIN_KEY"
        )

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in _split(value):
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: give scheme and host (and port), such as "
                    "https://www.example.com, without a path; or `*`"
                )
        return value

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in {"http", "https"} or not parts.netloc):
            raise ValueError(
                "must be an http:// or https:// URL, such as https://flows.example.com"
            )
        if parts.query or parts.fragment:
            raise ValueError("must be a URL without a query or fragment")
        return value

    @field_validator("task_link_secret")
    @classmethod
    def _link_secret(cls, value: str) -> str:
        return _secret(value, 32, f"(make one with {_MAKE_SECRET})")

    @property
    def cors_origins(self) -> tuple[str, ...]:
        return tuple(_split(self.cors_allow_origins))

    @property
    def base_url(self) -> str:
        """PUBLIC_BASE_URL without its trailing slash, or the API's own address."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = "127.0.0.1" if self.api_host in {"0.0.0.0", "::", ""} else self.api_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.api_port}"

    @property
    def task_link_key(self) -> bytes | None:
        """The key that signs approval links: TASK_LINK_SECRET. Without it, in a deployment
        with an operator's key, None: task emails carry no links (a guessable key would let
        anyone decide any task). Without either (an open development setup, where the API
        itself asks for no key), one derived from DATABASE_URL, which the API and the workers
        share."""
        if self.task_link_secret:
            return self.task_link_secret.encode()
        if self.admin_key:
            return None
        return hashlib.sha256(
            b"flowline task links (development)" + self.database_url.encode()
        ).digest()

    @property
    def admin_key(self) -> str:
        """The operator's key, by its name or its old one (API_TOKEN)."""
        return self.api_admin_key or self.api_token

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: str) -> str:
        AllowedHosts.parse(value)
        return value

    @model_validator(mode="after")
    def _heartbeat_outlives_a_beat(self) -> Settings:
        if self.worker_dead_after_seconds < 3 * self.worker_heartbeat_seconds:
            raise ValueError(
                "WORKER_DEAD_AFTER_SECONDS must be at least 3 x WORKER_HEARTBEAT_SECONDS "
                f"({3 * self.worker_heartbeat_seconds:g}): one late heartbeat must not make a "
                "live worker look dead"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @cached_property
    def allowed_webhook_hosts(self) -> AllowedHosts:
        """WEBHOOK_ALLOWED_HOSTS, parsed (it was checked when the settings were built)."""
        return AllowedHosts.parse(self.webhook_allowed_hosts)

    @property
    def limits(self) -> Limits:
        """The limits a run and a dry run work within."""
        return Limits(
            rendered_bytes=self.max_rendered_bytes,
            recipients_per_email=self.max_recipients_per_email,
            emails_per_run=self.max_emails_per_run,
            dry_run_bytes=self.max_dry_run_bytes,
        )

    @property
    def postgres_dsn(self) -> str:
        """The URL as asyncpg takes it (postgresql://), whichever form the user gave."""
        _, rest = self.database_url.split("://", 1)
        return f"postgresql://{rest}"

    @property
    def database_name(self) -> str:
        """The database's name, from DATABASE_URL."""
        return urlsplit(self.postgres_dsn).path.lstrip("/")

    @property
    def sqlalchemy_url(self) -> str:
        """The URL for SQLAlchemy's engine (Alembic's migrations only), with its asyncpg
        driver."""
        _, rest = self.database_url.split("://", 1)
        return f"postgresql+asyncpg://{rest}"

    @property
    def spool_dir(self) -> str:
        """WORKER_SPOOL_DIR, or its default under the system's temporary directory."""
        return self.worker_spool_dir or os.path.join(tempfile.gettempdir(), "flowline-spool")

    @property
    def consumer_name(self) -> str:
        # hostname-pid: unique per process natively; stable across restarts of one container
        # (pid 1), so a restarted container re-reads its own pending entries at once.
        return self.worker_consumer_name or f"{socket.gethostname()}-{os.getpid()}"


_ORIGIN = re.compile(r"https?://[^/\s?#]+")


_MAKE_SECRET = '`python -c "import secrets; print(secrets.token_urlsafe(32))"`'


def _secret(value: str, minimum: int, advice: str) -> str:
    """A key or secret setting: empty, or `minimum`+ printable ASCII characters without spaces.
    The refusal never repeats the value."""
    if value and not re.fullmatch(rf"[\x21-\x7e]{{{minimum},}}", value):
        raise ValueError(
            f"must be at least {minimum} printable ASCII characters without spaces {advice}"
        )
    return value


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def links_off_warning(settings: Settings) -> str | None:
    """What the process says at start when approval links are off: an operator's key is set
    (a real deployment) but TASK_LINK_SECRET is not, so links could not be signed safely."""
    if settings.task_link_key is None:
        return (
            "API_ADMIN_KEY is set but TASK_LINK_SECRET is not: task emails carry no approval "
            "links; set TASK_LINK_SECRET (32+ characters, the same for the API and every "
            "worker) to have them"
        )
    return None


class SettingsError(SystemExit):
    """A setting has a value Flowline cannot use; the message names it."""


def describe_error(error: ValidationError) -> str:
    first = error.errors()[0]
    if not first["loc"]:  # a rule about several settings: its message names them
        return f"invalid settings: {first['msg'].removeprefix('Value error, ')}"
    name = str(first["loc"][0]).upper()
    value = first.get("input")
    if any(word in name for word in ("PASSWORD", "TOKEN", "KEY", "SECRET")):
        shown = "'***'"
    elif isinstance(value, str) and "://" in value:
        shown = repr(re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", value))  # hide passwords
    else:
        shown = repr(value)
    return f"invalid setting {name}={shown}: {first['msg']}"


def load_settings(**overrides: object) -> Settings:
    """Build the settings, or stop the process with one line naming the bad one."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(f"flowline: {describe_error(error)}") from None
