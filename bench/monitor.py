"""CPU and memory of every process that takes part in a run, read with psutil.

Our own children (API, workers, sink, load generator) are registered by pid. PostgreSQL and
Redis are found by name: `postgres` processes are sorted into the backends serving the bench's
database, the server's own processes (postmaster, WAL writer, checkpointer ...), and backends
of other databases (someone else's load: reported, never charged to Flowline); `redis-server`
is one process shared by all its users.

CPU is read at named marks (`mark("start")` ...) and reported as deltas between two marks. A
process that appears after the first mark counts from zero; one that exits counts up to its
last sample. RSS is sampled every 100 ms for the peaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

POLL_SECONDS = 0.1
DISCOVER_EVERY = 5  # polls: new postgres backends are looked for every 0.5 s
MAP_SMTP_EVERY = 20  # polls: reading every TCP socket of the machine costs ~20 ms

PG_BENCH, PG_SERVER, PG_OTHER, REDIS = (
    "postgres (bench db)",
    "postgres (server)",
    "postgres (other dbs)",
    "redis-server",
)
OURS = frozenset({"api", "worker", "sink"})  # sampled every 100 ms, with their RSS
_CLIENT_ADDRESS = re.compile(r"\[local\]|\(\d+\)")


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def machine_busy() -> float:
    """CPU seconds all CPUs spent running something since boot (idle, I/O wait and time
    stolen by the hypervisor left out; guest time is already part of user time)."""
    times = psutil.cpu_times()
    extra = ("irq", "softirq")
    return float(
        times.user + times.nice + times.system + sum(getattr(times, f, 0.0) for f in extra)
    )


def forks() -> int:
    """Processes created since boot (Linux; 0 elsewhere)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("processes "):
                return int(line.split()[1])
    return 0


@dataclass
class Tracked:
    role: str
    process: psutil.Process
    label: str = ""
    last_cpu: float = 0.0
    peak_rss: int = 0
    alive: bool = True


@dataclass
class Mark:
    at: float
    cpu: dict[int, float] = field(default_factory=dict)
    machine: float = 0.0
    forks: int = 0
    # every process on the machine: pid -> (cpu seconds, short description)
    everyone: dict[int, tuple[float, str]] = field(default_factory=dict)


def everyone() -> dict[int, tuple[float, str]]:
    """CPU seconds of every process (about 10 ms: taken only at marks)."""
    found: dict[int, tuple[float, str]] = {}
    for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        times, cmdline = process.info["cpu_times"], process.info["cmdline"]
        if times is None:
            continue
        text = " ".join(cmdline) if cmdline else f"[{process.info['name']}]"
        found[process.pid] = (float(times.user + times.system), text[:100])
    return found


class Monitor:
    def __init__(self, database: str, sink_port: int | None = None) -> None:
        self.database = database
        self.sink_port = sink_port
        self.tracked: dict[int, Tracked] = {}
        self.marks: dict[str, Mark] = {}
        # local port of an SMTP connection to the sink -> pid of the worker that opened it
        self.smtp_ports: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._ignored: set[int] = set()

    # -- registering ----------------------------------------------------------------------------

    def add(self, role: str, pid: int, label: str = "") -> None:
        with contextlib.suppress(psutil.Error):
            tracked = Tracked(role, psutil.Process(pid), label or role)
            tracked.last_cpu = _cpu(tracked.process)
            self.tracked[pid] = tracked

    def _classify(self, name: str, cmdline: list[str]) -> str | None:
        if name == "redis-server":
            return REDIS
        if name not in {"postgres", "postmaster"}:
            return None
        title = " ".join(cmdline)
        if f" {self.database} " in f" {title} ":
            return PG_BENCH
        return PG_OTHER if _CLIENT_ADDRESS.search(title) else PG_SERVER

    def discover(self) -> None:
        """Track PostgreSQL and Redis processes not seen before (only new pids are read)."""
        for pid in psutil.pids():
            if pid in self.tracked or pid in self._ignored:
                continue
            self._ignored.add(pid)
            with contextlib.suppress(psutil.Error, OSError):
                process = psutil.Process(pid)
                name = process.name()
                if name in {"postgres", "postmaster", "redis-server"}:
                    role = self._classify(name, process.cmdline())
                    if role is not None:
                        self._ignored.discard(pid)
                        self.add(role, pid)
        self._reclassify()

    def _reclassify(self) -> None:
        """A backend just forked still carries the postmaster's command line for a moment;
        once it has its title (user, database, client), it moves to its real row."""
        for tracked in self.tracked.values():
            if tracked.role == PG_SERVER and tracked.alive:
                with contextlib.suppress(psutil.Error):
                    role = self._classify("postgres", tracked.process.cmdline())
                    if role is not None and role != PG_SERVER:
                        tracked.role = tracked.label = role

    # -- sampling -------------------------------------------------------------------------------

    @staticmethod
    def _read(tracked: Tracked, *, memory: bool) -> None:
        try:
            with tracked.process.oneshot():
                tracked.last_cpu = _cpu(tracked.process)
                if memory:
                    tracked.peak_rss = max(tracked.peak_rss, tracked.process.memory_info().rss)
        except psutil.Error:
            tracked.alive = False

    def sample(self) -> None:
        """CPU of every tracked process (RSS too for ours)."""
        for tracked in self.tracked.values():
            if tracked.alive:
                self._read(tracked, memory=tracked.role in OURS)

    def _sample_ours(self) -> None:
        for tracked in self.tracked.values():
            if tracked.alive and tracked.role in OURS:
                self._read(tracked, memory=True)

    def _map_smtp_connections(self) -> None:
        """With several workers, which one opened each SMTP connection (its local port).
        Pooled SMTP connections live long: a look every 2 s catches nearly all of them."""
        workers = [t for t in self.tracked.values() if t.role == "worker"]
        if self.sink_port is None or len(workers) < 2:
            return
        for tracked in workers:
            if not tracked.alive:
                continue
            with contextlib.suppress(psutil.Error):
                for conn in tracked.process.net_connections(kind="tcp"):
                    if conn.raddr and conn.raddr.port == self.sink_port:
                        self.smtp_ports[conn.laddr.port] = tracked.process.pid

    async def _poll(self) -> None:
        tick = 0
        while True:
            tick += 1
            self._sample_ours()
            if tick % DISCOVER_EVERY == 0:
                self.discover()
                self.sample()
            if tick % MAP_SMTP_EVERY == 0:
                self._map_smtp_connections()
            await asyncio.sleep(POLL_SECONDS)

    def start(self) -> None:
        self.discover()
        self._task = asyncio.create_task(self._poll(), name="monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._map_smtp_connections()

    def mark(self, name: str, at: float, *, census: bool = False) -> None:
        """Read every tracked process's CPU now (`census`: every process's)."""
        self.discover()
        self.sample()
        self._map_smtp_connections()
        self.marks[name] = Mark(
            at,
            {pid: t.last_cpu for pid, t in self.tracked.items()},
            machine_busy(),
            forks(),
            everyone() if census else {},
        )

    # -- reading --------------------------------------------------------------------------------

    def cpu_between(self, first: str, last: str) -> dict[str, float]:
        """CPU seconds per process label between two marks."""
        start, end = self.marks[first], self.marks[last]
        seconds: dict[str, float] = defaultdict(float)
        for pid, tracked in self.tracked.items():
            if pid not in end.cpu:
                continue  # appeared after the last mark
            seconds[tracked.label] += max(end.cpu[pid] - start.cpu.get(pid, 0.0), 0.0)
        return dict(seconds)

    def machine_between(self, first: str, last: str) -> float:
        return self.marks[last].machine - self.marks[first].machine

    def forks_between(self, first: str, last: str) -> int:
        return self.marks[last].forks - self.marks[first].forks

    def busiest_untracked(self, first: str, last: str, count: int = 5) -> list[dict[str, Any]]:
        """The processes, other than ours, that used the most CPU between two census marks."""
        start, end = self.marks[first].everyone, self.marks[last].everyone
        used = [
            (cpu - start.get(pid, (0.0, ""))[0], pid, text)
            for pid, (cpu, text) in end.items()
            if pid not in self.tracked
        ]
        used.sort(reverse=True)
        return [
            {"pid": pid, "cpu_seconds": round(cpu, 2), "command": text}
            for cpu, pid, text in used[:count]
            if cpu >= 0.05
        ]

    def peak_rss(self) -> dict[str, int]:
        return {t.label: t.peak_rss for t in self.tracked.values() if t.peak_rss}
