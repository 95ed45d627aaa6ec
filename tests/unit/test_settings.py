from __future__ import annotations

import os
import socket
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from workflow_core.destinations import AllowedHosts
from workflow_core.settings import Settings, SettingsError, links_off_warning, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting comes from the environment or from a `.env` file in the working directory."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("database_url", "postgresql://postgres@localhost:5432/flowline"),
        ("redis_host", "localhost"),
        ("redis_port", 6379),
        ("redis_db", 0),
        ("redis_password", ""),
        ("redis_stream_name", "workflow_events"),
        ("smtp_host", "localhost"),
        ("smtp_port", 1025),
        ("smtp_user", ""),
        ("smtp_password", ""),
        ("smtp_use_tls", False),
        ("from_email", "flowline@localhost"),
        ("api_host", "127.0.0.1"),
        ("api_port", 8000),
        ("worker_concurrency", 32),
        ("claim_idle_seconds", 30),
        ("delivery_limit", 5),
    ],
)
def test_the_contracts_defaults(name: str, expected: Any) -> None:
    assert getattr(load_settings(), name) == expected


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"worker_concurrency": 0}, "WORKER_CONCURRENCY"),
        ({"worker_concurrency": "many"}, "WORKER_CONCURRENCY"),
        ({"redis_port": 70000}, "REDIS_PORT"),
        ({"redis_port": 0}, "REDIS_PORT"),
        ({"redis_db": -1}, "REDIS_DB"),
        ({"database_url": "mysql://x/y"}, "DATABASE_URL"),
        ({"database_url": "postgresql://localhost"}, "DATABASE_URL"),
        ({"log_level": "LOUD"}, "LOG_LEVEL"),
        ({"log_format": "xml"}, "LOG_FORMAT"),
        ({"claim_idle_seconds": 0}, "CLAIM_IDLE_SECONDS"),
        ({"action_max_attempts": 200}, "ACTION_MAX_ATTEMPTS"),
        ({"smtp_data_timeout_seconds": 0}, "SMTP_DATA_TIMEOUT_SECONDS"),
        ({"event_reconcile_seconds": -1}, "EVENT_RECONCILE_SECONDS"),
        ({"worker_dead_after_seconds": 2}, "WORKER_DEAD_AFTER_SECONDS"),
        ({"delivery_limit": -1}, "DELIVERY_LIMIT"),
        ({"smtp_use_tls": "perhaps"}, "SMTP_USE_TLS"),
        ({"redis_stream_name": ""}, "REDIS_STREAM_NAME"),
        ({"api_token": "short"}, "API_TOKEN"),
        ({"api_token": "sixteen chars or more but spaces"}, "API_TOKEN"),
        ({"webhook_allowed_hosts": "10.0.0.1/8"}, "WEBHOOK_ALLOWED_HOSTS"),
        ({"webhook_allowed_hosts": "hooks.internal,http://x"}, "WEBHOOK_ALLOWED_HOSTS"),
    ],
)
def test_a_bad_value_stops_with_one_line_naming_the_setting(
    overrides: dict[str, Any], name: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert name in message
    assert len(message.splitlines()) == 1


def test_a_settings_error_stops_the_process() -> None:
    assert issubclass(SettingsError, SystemExit)


def test_a_bad_value_from_the_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_CONCURRENCY", "0")
    with pytest.raises(SettingsError, match="WORKER_CONCURRENCY"):
        load_settings()


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PORT", "6380")
    monkeypatch.setenv("SMTP_USE_TLS", "true")
    monkeypatch.setenv("REDIS_STREAM_NAME", "events_test")
    settings = load_settings()
    assert settings.redis_port == 6380
    assert settings.smtp_use_tls is True
    assert settings.redis_stream_name == "events_test"


def test_the_log_level_is_case_insensitive() -> None:
    assert load_settings(log_level="debug").log_level == "DEBUG"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:pw@db:5432/flowline",
        "postgres://user:pw@db:5432/flowline",
        "postgresql+asyncpg://user:pw@db:5432/flowline",
    ],
)
def test_any_form_of_the_database_url_gives_asyncpg_and_sqlalchemy_theirs(url: str) -> None:
    settings = load_settings(database_url=url)
    assert settings.postgres_dsn == "postgresql://user:pw@db:5432/flowline"
    assert settings.sqlalchemy_url == "postgresql+asyncpg://user:pw@db:5432/flowline"


def test_the_consumer_name_defaults_to_host_and_pid() -> None:
    assert load_settings().consumer_name == f"{socket.gethostname()}-{os.getpid()}"


def test_the_consumer_name_can_be_set() -> None:
    assert load_settings(worker_consumer_name="worker-a").consumer_name == "worker-a"


def test_a_rejected_database_url_does_not_reveal_its_password() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(database_url="mysql://admin:s3cr3t-pw@db/flowline")
    assert "DATABASE_URL" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value)


def test_a_rejected_api_token_is_not_shown() -> None:
    with pytest.raises(SettingsError, match="API_TOKEN") as caught:
        load_settings(api_token="hunter2")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("from_email", ["flowline@", "not an address"])
def test_a_from_email_that_is_not_an_address_is_named(from_email: str) -> None:
    with pytest.raises(SettingsError, match="FROM_EMAIL"):
        load_settings(from_email=from_email)


def test_webhook_allowed_hosts_is_empty_by_default_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().allowed_webhook_hosts == AllowedHosts()
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "hooks.internal, 10.1.0.0/16")
    allowed = load_settings().allowed_webhook_hosts
    assert allowed.allows_name("hooks.internal")
    assert allowed.allows_address(ip_address("10.1.2.3"))


def test_a_bad_webhook_allowed_hosts_entry_is_named_in_the_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(webhook_allowed_hosts="127.0.0.1, 10.0.0.0/33 ,localhost")
    message = str(caught.value)
    assert message.startswith("flowline: invalid setting WEBHOOK_ALLOWED_HOSTS=")
    assert "'10.0.0.0/33' is not a host name, an IP address or a CIDR network" in message
    assert len(message.splitlines()) == 1


def test_web_pages_settings_and_their_defaults() -> None:
    plain = load_settings(_env_file=None)
    assert plain.cors_origins == ()
    assert plain.base_url == "http://127.0.0.1:8000"
    assert load_settings(_env_file=None, api_host="0.0.0.0", api_port=9000).base_url == (
        "http://127.0.0.1:9000"
    )
    chosen = load_settings(
        _env_file=None,
        cors_allow_origins=" https://a.example.com, http://localhost:3000 ",
        public_base_url="https://flows.example.com/",
    )
    assert chosen.cors_origins == ("https://a.example.com", "http://localhost:3000")
    assert chosen.base_url == "https://flows.example.com"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cors_allow_origins", "https://a.example.com/path"),
        ("cors_allow_origins", "a.example.com"),
        ("public_base_url", "flows.example.com"),
        ("task_link_secret", "short"),
        ("task_link_ttl_seconds", "0"),
    ],
)
def test_bad_web_pages_settings_are_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name.upper()) as stopped:
        load_settings(_env_file=None, **{name: value})
    if name == "task_link_secret":
        assert "short" not in str(stopped.value)


def test_an_operators_key_without_a_task_link_secret_turns_the_links_off() -> None:
    admin = "fl_admin_" + "x" * 40
    assert links_off_warning(load_settings(_env_file=None)) is None
    off = load_settings(_env_file=None, api_admin_key=admin)
    assert off.task_link_key is None  # a guessable key would let anyone decide any task
    line = links_off_warning(off)
    assert line is not None and "TASK_LINK_SECRET" in line and "\n" not in line
    secret = "s" * 32
    on = load_settings(_env_file=None, api_admin_key=admin, task_link_secret=secret)
    assert links_off_warning(on) is None and on.task_link_key == secret.encode()
    dev = load_settings(_env_file=None).task_link_key
    assert dev is not None and len(dev) == 32 and dev == load_settings(_env_file=None).task_link_key
