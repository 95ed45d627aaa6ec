"""The soak's own redis-server, on a free port and in a directory of its own, that the fault
injector may restart empty (stop it, delete its files, start it again on the same port). The
machine's shared Redis is never touched.

Two modes: `aof` (an append-only file flushed before every answer, what the README asks of a
production Redis) and `memory` (no persistence at all). Whichever the mode, an empty restart
loses everything: it stands for a failover to an empty replica, or a host that is replaced."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import time
from pathlib import Path
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chaos.processes import DIE_WITH_HARNESS

Mode = Literal["aof", "memory"]


class RedisServerError(Exception):
    """The private redis-server did not start; the message says why."""


class RedisServer:
    def __init__(self, data_dir: Path, log_path: Path, port: int) -> None:
        self.data_dir, self.log_path, self.port = data_dir, log_path, port
        self.mode: Mode = "aof"
        self.modes: list[Mode] = []
        """The mode of every start, in order."""
        self._process: asyncio.subprocess.Process | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _args(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.mode == "aof"
            else ["--appendonly", "no"]
        )
        return [
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            *persistence,
            "--logfile", str(self.log_path),
        ]  # fmt: skip

    async def start(self, mode: Mode, timeout: float = 15.0) -> None:
        self.mode = mode
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            "redis-server",
            *self._args(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=DIE_WITH_HARNESS,
        )
        self.modes.append(mode)
        client = aioredis.Redis(port=self.port, socket_timeout=1.0)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self._process.returncode is not None:
                    break
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        return
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        raise RedisServerError(
            f"redis-server on port {self.port} did not start (see {self.log_path})"
        )

    async def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()

    def wipe(self) -> None:
        """Delete what Redis keeps on disk (the append-only files), not the directory."""
        for path in self.data_dir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    async def restart_empty(self, mode: Mode, down_seconds: float) -> None:
        await self.stop()
        self.wipe()
        await asyncio.sleep(down_seconds)
        await self.start(mode)
