"""`make run`'s decisions (dev/run.py): when the catcher runs and where, the development admin
key, and the webhook hosts it allows."""

from __future__ import annotations

import re

import pytest

from dev.run import catcher_address, new_admin_key, port_variable, with_allowed_host


@pytest.mark.parametrize(
    ("smtp_host", "flag", "expected"),
    [
        ("localhost", None, "127.0.0.1"),
        ("LOCALHOST", "1", "127.0.0.1"),
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.2", None, "127.0.0.2"),
        ("::1", None, "::1"),
        ("localhost", "0", None),
        ("localhost", "false", None),
        ("127.0.0.1", " OFF ", None),
        ("smtp.example.com", None, None),
        ("mailpit", "1", None),
        ("10.0.0.5", None, None),
        ("0.0.0.0", None, None),
    ],
)
def test_the_catcher_runs_on_loopback_only_for_a_local_smtp_host(
    smtp_host: str, flag: str | None, expected: str | None
) -> None:
    assert catcher_address(smtp_host, flag) == expected


def test_a_development_admin_key_is_random_and_long_enough() -> None:
    keys = {new_admin_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(re.fullmatch(r"fl_admin_[A-Za-z0-9_-]{43}", key) for key in keys)


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ("", "127.0.0.1"),
        ("hooks.internal", "hooks.internal,127.0.0.1"),
        (" 10.0.0.0/8 , ", "10.0.0.0/8,127.0.0.1"),
        ("127.0.0.1,example.org", "127.0.0.1,example.org"),
    ],
)
def test_the_catcher_is_added_to_the_allowed_webhook_hosts(existing: str, expected: str) -> None:
    assert with_allowed_host(existing, "127.0.0.1") == expected


def test_a_bad_catcher_port_stops_make_run_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATCHER_HTTP_PORT", "80x")
    with pytest.raises(SystemExit, match="invalid CATCHER_HTTP_PORT='80x': must be a whole"):
        port_variable("CATCHER_HTTP_PORT", 8025)
    monkeypatch.setenv("CATCHER_HTTP_PORT", "9025")
    assert port_variable("CATCHER_HTTP_PORT", 8025) == 9025
    monkeypatch.delenv("CATCHER_HTTP_PORT")
    assert port_variable("CATCHER_HTTP_PORT", 8025) == 8025
