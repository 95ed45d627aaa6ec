"""Fixtures of the end-to-end tests that more than one module uses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.support.tcp_proxy import TcpProxy


@dataclass
class ProxiedDatabase:
    """The test's database behind a TCP proxy the test can cut and restore."""

    proxy: TcpProxy
    url: str  # DATABASE_URL through the proxy


@pytest.fixture
def proxied_database(settings: Any) -> Iterator[ProxiedDatabase]:
    """Ask for it before `stack`, so that it is torn down last: the processes stop while the
    proxy still forwards."""
    database = make_url(settings.database_url)
    proxy = TcpProxy(database.host or "127.0.0.1", database.port or 5432).start()
    through_proxy = database.set(host="127.0.0.1", port=proxy.port)
    yield ProxiedDatabase(proxy, through_proxy.render_as_string(hide_password=False))
    proxy.stop()
