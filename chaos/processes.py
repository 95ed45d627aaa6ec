"""Flowline's own processes, started the way users start them (`python -m services.api`,
`python -m services.worker`), each lifetime logging to a file of its own in the run directory.

A worker keeps its name (`WORKER_CONSUMER_NAME`) across restarts, so that the restarted process
is the same consumer and takes its pending entries back. A process that exits when nobody asked
it to is an unexpected exit: recorded, reported and started again, so the soak goes on."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API, WORKER = "services.api", "services.worker"
_PR_SET_PDEATHSIG = 1


def _die_with_harness() -> None:
    """In the child, before exec: SIGKILL when the harness dies, even by SIGKILL, so that no
    worker or redis-server outlives a soak that could not clean up."""
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


DIE_WITH_HARNESS: Callable[[], None] | None = _die_with_harness if sys.platform == "linux" else None


@dataclass
class Lifetime:
    """One process of one name: a restart is a new lifetime."""

    name: str
    index: int
    module: str
    process: asyncio.subprocess.Process
    log_path: Path
    started: float
    expected_exit: bool = False
    ended: float | None = None
    returncode: int | None = None

    @property
    def label(self) -> str:
        return f"{self.name}#{self.index}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def describe_exit(self) -> str:
        """How it ended, with its last log line (Flowline says why in one line)."""
        lines = self.log_tail().strip().splitlines()
        age = (self.ended or time.time()) - self.started
        last = lines[-1][:160] if lines else "no output"
        return f"{self.label} exit {self.returncode} {age:.0f}s after start: {last}"


@dataclass
class Flowline:
    run_dir: Path
    env: dict[str, str]
    current: dict[str, Lifetime] = field(default_factory=dict)
    lifetimes: list[Lifetime] = field(default_factory=list)
    unexpected_exits: list[Lifetime] = field(default_factory=list)

    async def start(self, name: str, module: str) -> Lifetime:
        index = 1 + sum(1 for life in self.lifetimes if life.name == name)
        log_path = self.run_dir / f"{name}.{index}.log"
        env = dict(self.env)
        if module == WORKER:
            env["WORKER_CONSUMER_NAME"] = name
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=DIE_WITH_HARNESS,
            )
        life = Lifetime(name, index, module, process, log_path, time.time())
        self.current[name] = life
        self.lifetimes.append(life)
        return life

    def workers(self) -> list[Lifetime]:
        return [life for life in self.current.values() if life.module == WORKER]

    async def wait_log(self, name: str, text: str, timeout: float) -> bool:
        """Whether the process of `name` logged `text` within `timeout` seconds (a process
        that exits meanwhile is replaced by `restart_unexpected`; its successor counts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.current[name].log_tail(chars=1 << 20):
                return True
            await asyncio.sleep(0.2)
        return False

    async def stop(self, name: str, signum: int, timeout: float) -> int:
        """Send `signum` and wait for the exit (SIGKILL after `timeout`); the exit code."""
        life = self.current[name]
        life.expected_exit = True
        if life.running:
            life.process.send_signal(signum)
        try:
            await asyncio.wait_for(life.process.wait(), timeout)
        except TimeoutError:
            life.process.kill()
            await life.process.wait()
        self._ended(life)
        assert life.returncode is not None
        return life.returncode

    def _ended(self, life: Lifetime) -> None:
        if life.ended is None:
            life.ended, life.returncode = time.time(), life.process.returncode

    async def restart_unexpected(self) -> list[Lifetime]:
        """Start again whatever exited without being asked to; the lifetimes that had."""
        gone = [
            life for life in self.current.values() if not life.running and not life.expected_exit
        ]
        for life in gone:
            self._ended(life)
            self.unexpected_exits.append(life)
            await self.start(life.name, life.module)
        return gone

    async def stop_all(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM to everyone at once, SIGKILL for whoever is still there after `timeout`."""
        names = [name for name, life in self.current.items() if life.running]
        codes = await asyncio.gather(*(self.stop(name, signal.SIGTERM, timeout) for name in names))
        return dict(zip(names, codes, strict=True))

    def kill_all(self) -> None:
        """The last resort of a clean-up that was itself interrupted."""
        for life in self.lifetimes:
            if life.running:
                with contextlib.suppress(ProcessLookupError):
                    life.process.kill()
