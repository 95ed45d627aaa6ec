"""LISTEN for PostgreSQL's notifications: one dedicated asyncpg connection per process for every
channel the process waits on, reconnecting by itself. Each waiter holds a `Channel`: `wait()`
returns on a notification, a timeout, or stop, whichever comes first. A lost connection only
makes waiting fall back to the timeout (every waiter polls as a backstop), and a reconnect
wakes every channel (anything may have happened while it was deaf)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any

import asyncpg

from workflow_core.log import get_logger

log = get_logger(__name__)


class Channel:
    def __init__(self, name: str) -> None:
        self.name = name
        self._wake = asyncio.Event()
        self.listening = False
        """Whether PostgreSQL's notifications on this channel reach us now (LISTEN is in
        place on a live connection): while False, a change may go unannounced."""

    def notify(self, *_: Any) -> None:
        self._wake.set()

    def pending(self) -> bool:
        """Whether a notification (or a reconnect) happened since the last `consume`."""
        return self._wake.is_set()

    def consume(self) -> None:
        self._wake.clear()

    async def wait(self, timeout: float, stop: asyncio.Event | None = None) -> bool:
        """Wait for a notification (True), or until `timeout` or `stop` (False)."""
        waiters = [asyncio.ensure_future(self._wake.wait())]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        woken = self._wake.is_set()
        self._wake.clear()
        return woken


class Listener:
    def __init__(self, dsn: str, *, retry_seconds: float = 2.0) -> None:
        self._dsn, self._retry_seconds = dsn, retry_seconds
        self._channels: dict[str, Channel] = {}
        self._connection: asyncpg.Connection | None = None
        self._listening: set[str] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._new_channel = asyncio.Event()

    def channel(self, name: str) -> Channel:
        """The channel `name` (one per name, shared by whoever asks for it). A new one is
        listened to at once, not at the keeper's next round."""
        if name not in self._channels:
            self._channels[name] = Channel(name)
            self._new_channel.set()
        return self._channels[name]

    async def __aenter__(self) -> Listener:
        self._keeper = asyncio.create_task(self._keep_connected(), name="listen")
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._keeper:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keeper
        await self._close()

    async def _keep_connected(self) -> None:
        while True:
            try:
                if self._connection is None or self._connection.is_closed():
                    self._deafen()
                    self._connection = await asyncpg.connect(self._dsn, timeout=5)
                self._new_channel.clear()  # a channel asked for from now on wakes us again
                deaf = [c for c in self._channels.values() if c.name not in self._listening]
                for channel in deaf:
                    await self._connection.add_listener(channel.name, channel.notify)
                    self._listening.add(channel.name)
                    channel.listening = True
                    channel.notify()  # anything may have happened while we were deaf
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                log.debug("listen_connect_failed", error=str(error))
                await self._close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._retry_seconds):
                    await self._new_channel.wait()

    def _deafen(self) -> None:
        self._listening.clear()
        for channel in self._channels.values():
            channel.listening = False

    async def _close(self) -> None:
        self._deafen()
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=2)
