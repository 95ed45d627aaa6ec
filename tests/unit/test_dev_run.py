"""`make run` (dev/run.py) lets webhooks reach its own catcher, which listens on loopback."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from dev.run import catcher_hosts
from workflow_core.destinations import AllowedHosts
from workflow_core.settings import load_settings


@pytest.mark.parametrize(
    ("smtp_host", "expected"),
    [
        ("localhost", "localhost,127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("mail.local", "mail.local,127.0.0.1"),
    ],
)
def test_the_catchers_host_and_address_are_allowed(smtp_host: str, expected: str) -> None:
    hosts = catcher_hosts(load_settings(_env_file=None, smtp_host=smtp_host))
    assert hosts == expected
    allowed = AllowedHosts.parse(hosts)  # a value the API and the worker accept at start
    assert allowed.allows_address(ip_address("127.0.0.1"))
    assert allowed.allows_name(smtp_host) or smtp_host == "127.0.0.1"


def test_a_host_the_setting_cannot_name_leaves_the_printed_address() -> None:
    assert catcher_hosts(load_settings(_env_file=None, smtp_host="not a host")) == "127.0.0.1"
