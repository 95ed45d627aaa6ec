"""Name resolution under a test's control, and a guard that keeps every connection on loopback.

`FakeResolver` replaces the running event loop's getaddrinfo: Flowline's own lookup and any
lookup httpx or anyio would make go through it, so a test sees every lookup of a name and can
answer each one differently (a name that "rebinds" between a check and a connection). Names it
does not know are resolved for real.

`loopback_only` fails the test instead of opening a connection to anything but loopback: the
tests make names resolve to private addresses to see them refused, and nothing may ever be
sent there, even by a bug."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

import httpcore
import pytest

AddrInfo = tuple[Any, ...]


class FakeResolver:
    def __init__(self, real: Callable[..., Any]) -> None:
        self._real = real
        self._answers: dict[str, list[list[str]]] = {}
        self._hang: set[str] = set()
        self._unknown: set[str] = set()
        self.lookups: list[str] = []

    def answer(self, name: str, *answers: list[str]) -> None:
        """The addresses of each lookup of `name` in turn (the last one from then on)."""
        self._answers[name] = [list(answer) for answer in answers]

    def hang(self, name: str) -> None:
        """A lookup of `name` that never comes back (a DNS server that does not answer)."""
        self._hang.add(name)

    def unknown(self, name: str) -> None:
        """A name the resolver does not know (NXDOMAIN)."""
        self._unknown.add(name)

    def count(self, name: str) -> int:
        return self.lookups.count(name)

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[AddrInfo]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in self._hang:
            self.lookups.append(name)
            await asyncio.sleep(3600)
        if name in self._unknown:
            self.lookups.append(name)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if name not in self._answers:
            return list(await self._real(host, port, *args, **kwargs))
        self.lookups.append(name)
        answers = self._answers[name]
        current = answers.pop(0) if len(answers) > 1 else answers[0]
        return [_info(address, port) for address in current]


def _info(address: str, port: Any) -> AddrInfo:
    number = int(port or 0)
    if ip_address(address).version == 6:
        return (
            socket.AF_INET6,
            socket.SOCK_STREAM,
            socket.IPPROTO_TCP,
            "",
            (address, number, 0, 0),
        )
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, number))


def fake_resolver(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    """A FakeResolver in place of the running loop's getaddrinfo until the test ends."""
    loop = asyncio.get_running_loop()
    fake = FakeResolver(loop.getaddrinfo)
    monkeypatch.setattr(loop, "getaddrinfo", fake.getaddrinfo)
    return fake


def guard_loopback(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address httpx's network backend connected to; anything but loopback fails."""
    connected: list[str] = []
    real = httpcore.AnyIOBackend.connect_tcp

    async def guarded(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if not ip_address(host.split("%")[0]).is_loopback:
            raise AssertionError(f"a test tried to connect to {host}: only loopback is allowed")
        connected.append(host)
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", guarded)
    return connected
