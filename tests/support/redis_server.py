"""A redis-server of the test's own, on its own port and directory, that the test may stop
and start again (the machine's shared Redis is never touched). By default it keeps its data in
an append-only file, as production Redis should, so a restart loses nothing acknowledged;
`persistent=False` keeps nothing, and `restart_empty()` is a restart that lost everything (a
failover to a replica that had not caught up does the same to recent writes)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.support.net import free_port


class RedisServer:
    def __init__(self, directory: Path, *, persistent: bool = True) -> None:
        self.port = free_port()
        self.directory = directory
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *(
                    ["--appendonly", "yes", "--appendfsync", "always"]
                    if self.persistent
                    else ["--appendonly", "no"]
                ),
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server on port {self.port} did not start")

    def restart_empty(self) -> None:
        self.stop()
        for path in self.directory.glob("*"):
            if path.is_dir() and path.name.startswith("appendonly"):
                shutil.rmtree(path)
            elif path.suffix in {".aof", ".rdb"}:
                path.unlink()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None
