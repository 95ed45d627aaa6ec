"""The console's session cookie (services/api/console/session.py): what it seals opens again
with the same secret until it expires; anything altered, expired, or sealed with another
secret is no session; the operator's session is tied to the admin key it was opened with."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.api.console.session import (
    csrf_matches,
    new_session,
    operator_key,
    seal,
    session_secret,
    unseal,
)
from workflow_core.settings import SettingsError, load_settings

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def test_a_sealed_session_opens_again_until_it_expires() -> None:
    session = new_session("3f0c0c4e-4a8f-4f3e-9a47-1d1d1d1d1d1d", "ana@acme.test", now=NOW, hours=8)
    cookie = seal(session, SECRET)
    assert unseal(cookie, SECRET, now=NOW + 60) == session
    assert unseal(cookie, SECRET, now=NOW + 8 * 3600) is None
    assert "ana@acme.test" not in cookie  # base64url, not readable at a glance either


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # the signature
        lambda c: "e30" + c[3:],  # the payload
        lambda c: c.replace(".", ""),
        lambda c: c + ".x",
        lambda c: "",
        lambda c: "é.é",
    ],
)
def test_an_altered_cookie_is_no_session(change: object) -> None:
    cookie = seal(new_session("k", "w", now=NOW, hours=1), SECRET)
    assert callable(change)
    assert unseal(change(cookie), SECRET, now=NOW) is None


def test_another_secret_opens_nothing() -> None:
    cookie = seal(new_session("k", "w", now=NOW, hours=1), SECRET)
    assert unseal(cookie, b"t" * 32, now=NOW) is None


def test_csrf_tokens_differ_per_session_and_must_match() -> None:
    one, two = (new_session("k", "w", now=NOW, hours=1) for _ in range(2))
    assert one.csrf != two.csrf and len(one.csrf) >= 32
    assert csrf_matches(one.csrf, one.csrf)
    assert not csrf_matches(one.csrf, two.csrf) and not csrf_matches(one.csrf, None)
    assert replace(one, csrf=two.csrf) != one


def test_the_operator_session_names_a_fingerprint_of_the_admin_key() -> None:
    first, second = "fl_admin_" + "a" * 30, "fl_admin_" + "b" * 30
    assert operator_key(first) == operator_key(first) != operator_key(second)
    assert first not in operator_key(first)


def test_the_secret_is_set_or_derived_from_the_admin_key() -> None:
    admin = "fl_admin_" + "a" * 30
    derived = session_secret(load_settings(_env_file=None, api_admin_key=admin))
    assert derived == session_secret(load_settings(_env_file=None, api_admin_key=admin))
    assert admin.encode() not in derived
    chosen = "c" * 40
    assert (
        session_secret(
            load_settings(_env_file=None, api_admin_key=admin, console_session_secret=chosen)
        )
        == chosen.encode()
    )
    open_api = load_settings(_env_file=None)
    assert session_secret(open_api) != session_secret(open_api)  # random per process


def test_a_short_secret_stops_the_process_with_one_line_that_hides_it() -> None:
    with pytest.raises(SettingsError) as stopped:
        load_settings(_env_file=None, console_session_secret="short one")
    message = str(stopped.value)
    assert "CONSOLE_SESSION_SECRET" in message and "short one" not in message
    assert "\n" not in message
