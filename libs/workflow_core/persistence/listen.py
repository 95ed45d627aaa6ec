"""LISTEN on a PostgreSQL channel with a dedicated asyncpg connection that reconnects by
itself; `wait()` returns on a notification, a timeout, or stop, whichever comes first. A lost
connection only makes waiting fall back to the timeout (callers poll as a backstop)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any

import asyncpg

from workflow_core.log import get_logger

log = get_logger(__name__)


def plain_dsn(url: str) -> str:
    """asyncpg takes postgresql:// URLs, not SQLAlchemy's postgresql+asyncpg://."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


class Listener:
    def __init__(self, dsn: str, channel: str, *, retry_seconds: float = 2.0) -> None:
        self._dsn, self._channel = plain_dsn(dsn), channel
        self._retry_seconds = retry_seconds
        self._wake = asyncio.Event()
        self._connection: asyncpg.Connection | None = None
        self._keeper: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        self._keeper = asyncio.create_task(self._keep_connected(), name=f"listen:{self._channel}")
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

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def _keep_connected(self) -> None:
        while True:
            if self._connection is None or self._connection.is_closed():
                try:
                    self._connection = await asyncpg.connect(self._dsn, timeout=5)
                    await self._connection.add_listener(self._channel, self._notified)
                    self._wake.set()  # anything may have happened while we were deaf
                except (OSError, asyncpg.PostgresError, TimeoutError) as error:
                    log.debug("listen_connect_failed", channel=self._channel, error=str(error))
                    await self._close()
            await asyncio.sleep(self._retry_seconds)

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=2)

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
