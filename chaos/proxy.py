"""A TCP proxy in front of PostgreSQL, in the harness's event loop, so that the database can be
taken away from the API and the workers without touching the server (which other people use).

`cut()` aborts every connection and black-holes new ones: they connect, then hear nothing, the
way a dead network behaves (a refused connection would be kinder than a real outage).
`restore()` forwards again; the black-holed connections are reset then."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.cut_off = False
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._drop_all()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    def cut(self) -> None:
        self.cut_off = True
        self._drop_all()

    def restore(self) -> None:
        self.cut_off = False
        self._drop_all()  # the black-holed ones: their clients gave up on them long ago

    def _drop_all(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._transports.add(writer.transport)
        if self.cut_off:
            return  # held open, never answered, until restore() resets it
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._transports.discard(writer.transport)
            return
        if self._cut_meanwhile():
            upstream_writer.transport.abort()
            return
        self._transports.add(upstream_writer.transport)
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    def _cut_meanwhile(self) -> bool:
        """Whether a cut came while a connection was being made (a method, so that the
        type checker does not take the flag for unchanged across the await)."""
        return self.cut_off

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.cut_off:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
            self._transports.discard(writer.transport)
