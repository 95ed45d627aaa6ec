"""Starting the API and the worker as processes, the way users do (`python -m ...`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait; returns the exit code (SIGKILL after `timeout`)."""
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    @property
    def running(self) -> bool:
        return self.process.poll() is None


def start(
    module: str,
    env: dict[str, str],
    log_dir: Path,
    name: str | None = None,
    args: Sequence[str] = (),
) -> Service:
    name = name or module.rsplit(".", 1)[-1]
    log_path = log_dir / f"{name}-{time.time_ns()}.log"
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Service(name, process, log_path, env)


def wait_http(service: Service, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.running:
            raise AssertionError(
                f"{service.name} exited with {service.process.returncode}:\n{service.log()[-4000:]}"
            )
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(
        f"{service.name} not ready at {url} after {timeout}s:\n{service.log()[-4000:]}"
    )


def wait_log(service: Service, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in service.log():
            return
        if not service.running:
            raise AssertionError(f"{service.name} exited:\n{service.log()[-4000:]}")
        time.sleep(0.05)
    raise AssertionError(f"{service.name} never logged {text!r}:\n{service.log()[-4000:]}")
