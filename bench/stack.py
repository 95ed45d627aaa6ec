"""The system under test for one run: its own database and stream names, the SMTP sink, the API
and the workers as processes started the way users start them, and the clean-up afterwards
(drop that database, delete that stream's keys; nothing else is touched)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.engine import make_url

from bench.http import fetch
from tests.support.examples import EXAMPLE_WORKFLOW
from workflow_core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STOP_TIMEOUT = 30.0


class StackError(Exception):
    """Part of the system under test did not start or answer; the message says which."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Names:
    database: str
    stream: str

    @classmethod
    def fresh(cls) -> Names:
        token = secrets.token_hex(4)
        return cls(f"flowline_bench_{token}", f"bench:{token}")

    @property
    def keys(self) -> list[str]:
        return [
            self.stream,
            f"{self.stream}:dead",
            f"{self.stream}:errors",
            f"{self.stream}:replays",
        ]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float
    returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def terminate(self) -> None:
        if self.running:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """Wait for the exit (SIGKILL after `timeout`); the exit code, -9 when killed."""
        try:
            self.returncode = self.process.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            self.returncode = -9
        return self.returncode


def unclean_exits(exit_codes: dict[str, int | None]) -> dict[str, int | None]:
    """The children that did not exit cleanly on SIGTERM. uvicorn re-raises the SIGTERM it
    handled once it has shut down, so the API's -15 is its normal exit."""
    return {
        name: code
        for name, code in exit_codes.items()
        if code not in (0, None) and not (name == "api" and code == -signal.SIGTERM)
    }


def database_url(settings: Settings, database: str) -> str:
    return make_url(settings.database_url).set(database=database).render_as_string(False)


def admin_dsn(settings: Settings) -> str:
    url = make_url(settings.sqlalchemy_url).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


def redis_client(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password or None,
        decode_responses=True,
        socket_timeout=10,
    )


class Stack:
    """The processes of one run; `stop()` and `clean_up()` are safe to call whatever started."""

    def __init__(self, settings: Settings, names: Names, log_dir: Path, concurrency: int) -> None:
        self.settings, self.names, self.log_dir = settings, names, log_dir
        self.api_port = free_port()
        self.sink_port = 0
        self.children: list[Child] = []
        self.workers: list[Child] = []
        self.api: Child | None = None
        self.sink: Child | None = None
        self.sink_records = log_dir / "sink-records.tsv"
        self.sink_summary = log_dir / "sink-summary.json"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(settings, names.database),
            "REDIS_HOST": settings.redis_host,
            "REDIS_PORT": str(settings.redis_port),
            "REDIS_DB": str(settings.redis_db),
            "REDIS_PASSWORD": settings.redis_password,
            "REDIS_STREAM_NAME": names.stream,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_USER": "",
            "SMTP_PASSWORD": "",
            "SMTP_USE_TLS": "false",
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.api_port),
            "WORKER_CONCURRENCY": str(concurrency),
            # One organisation sends every form: a rate it never reaches, so the check runs
            # (and its cost is measured) but refuses nothing.
            "SUBMIT_RATE_PER_ORG": "1000000",
            "WORKER_CONSUMER_NAME": "",  # hostname-pid: one consumer per process
            "WORKER_METRICS_PORT": "0",  # several workers may share the host
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }

    def _spawn(self, name: str, args: list[str], *, stdout_pipe: bool = False) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.PIPE if stdout_pipe else log_file,
                stderr=log_file,
            )
        child = Child(name, process, log_path, time.time())
        self.children.append(child)
        return child

    # -- starting -------------------------------------------------------------------------------

    def start_sink(self, timeout: float = 15.0) -> Child:
        args = ["-m", "bench.sink", "--records", str(self.sink_records)]
        self.sink = self._spawn(
            "sink", [*args, "--summary", str(self.sink_summary)], stdout_pipe=True
        )
        assert self.sink.process.stdout is not None
        line = _readline(self.sink.process.stdout, timeout)
        match = re.match(rb"READY (\d+)", line)
        if match is None:
            raise StackError(f"the SMTP sink did not start: {line!r}\n{self.sink.log_tail()}")
        self.sink_port = int(match.group(1))
        self.env["SMTP_PORT"] = str(self.sink_port)
        return self.sink

    def start_api(self) -> Child:
        self.api = self._spawn("api", ["-m", "services.api"])
        return self.api

    def start_worker(self) -> Child:
        worker = self._spawn(f"worker-{len(self.workers) + 1}", ["-m", "services.worker"])
        self.workers.append(worker)
        return worker

    # -- waiting --------------------------------------------------------------------------------

    async def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.api is not None
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.api.running:
                raise StackError(
                    f"the API exited with {self.api.process.returncode}:\n{self.api.log_tail()}"
                )
            try:
                response = await fetch("127.0.0.1", self.api_port, "GET", "/readyz", timeout=2.0)
                if response.status == 200:
                    return
                last = f"{response.status} {response.body[:200]!r}"
            except (OSError, EOFError, TimeoutError) as error:
                last = f"{type(error).__name__}: {error}"
            await asyncio.sleep(0.1)
        raise StackError(f"the API was not ready after {timeout:.0f} s ({last})")

    async def create_workflow(self) -> str:
        response = await fetch(
            "127.0.0.1",
            self.api_port,
            "POST",
            "/workflows",
            orjson.dumps(EXAMPLE_WORKFLOW),
            timeout=10.0,
        )
        if response.status != 201:
            raise StackError(f"POST /workflows answered {response.status}: {response.body!r}")
        return str(orjson.loads(response.body)["id"])

    async def wait_consumers(self, workers: list[Child], timeout: float = 60.0) -> None:
        """Until every given worker has a consumer in the group (it has started reading)."""
        wanted = {f"{socket.gethostname()}-{w.pid}" for w in workers}
        deadline = time.monotonic() + timeout
        client = redis_client(self.settings)
        try:
            while time.monotonic() < deadline:
                for worker in workers:
                    if not worker.running:
                        raise StackError(
                            f"{worker.name} exited with {worker.process.returncode}:\n"
                            f"{worker.log_tail()}"
                        )
                with contextlib.suppress(ResponseError):
                    consumers = await client.xinfo_consumers(
                        self.names.stream, self.settings.redis_consumer_group
                    )
                    if wanted <= {c["name"] for c in consumers}:
                        return
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        raise StackError(f"the workers did not start reading within {timeout:.0f} s")

    # -- stopping -------------------------------------------------------------------------------

    def stop(self) -> dict[str, int | None]:
        """SIGTERM to the API and workers together, then the sink; SIGKILL whoever lingers."""
        services = [c for c in self.children if c is not self.sink]
        for child in services:
            child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in services:
            child.wait(deadline - time.monotonic())
        if self.sink is not None:
            self.sink.terminate()
            self.sink.wait(5.0)
            if self.sink.process.stdout is not None:
                self.sink.process.stdout.close()
        return {c.name: c.returncode for c in self.children}

    def sink_report(self) -> dict[str, Any]:
        """What the sink counted itself (written when it stopped)."""
        try:
            report: dict[str, Any] = orjson.loads(self.sink_summary.read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            return {"error": f"no summary from the sink: {error}"}
        return report

    async def inspect(self) -> dict[str, Any]:
        """What the system holds at the end: stream, dead letters, pending entries, runs."""
        found: dict[str, Any] = {}
        client = redis_client(self.settings)
        try:
            found["stream_length"] = await client.xlen(self.names.stream)
            found["dead_letters"] = await client.xlen(f"{self.names.stream}:dead")
            found["recorded_errors"] = await client.hlen(f"{self.names.stream}:errors")
            with contextlib.suppress(ResponseError):
                pending = await client.xpending(
                    self.names.stream, self.settings.redis_consumer_group
                )
                found["pending"] = pending["pending"]
        except RedisError as error:
            found["redis_error"] = f"{type(error).__name__}: {error}"
        finally:
            await client.aclose()
        found.update(await self._inspect_database())
        return found

    async def _inspect_database(self) -> dict[str, Any]:
        dsn = make_url(database_url(self.settings, self.names.database))
        dsn = dsn.set(drivername="postgresql")
        queries = {
            "submissions": "SELECT count(*) FROM submissions",
            "runs_by_status": "SELECT status, count(*) FROM runs GROUP BY status",
            "runs_redelivered": "SELECT count(*) FROM runs WHERE deliveries > 1",
            "actions_by_status": "SELECT status, count(*) FROM run_actions GROUP BY status",
            "outbox_unpublished": "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        }
        found: dict[str, Any] = {}
        try:
            connection = await asyncpg.connect(dsn.render_as_string(False), timeout=10)
        except (OSError, asyncpg.PostgresError) as error:
            return {"database_error": f"{type(error).__name__}: {error}"}
        try:
            for name, query in queries.items():
                try:
                    rows = await connection.fetch(query)
                except asyncpg.PostgresError as error:  # the schema moved on: say so, go on
                    found[name] = f"{type(error).__name__}: {error}"
                    continue
                grouped = "GROUP BY" in query
                found[name] = {r[0]: r[1] for r in rows} if grouped else rows[0][0]
        finally:
            await connection.close()
        return found

    async def database_stats(self) -> dict[str, Any]:
        """This database's counters in pg_stat_database, read once its clients have exited
        (a backend flushes its counters when it ends): transactions and rows, all of the run
        including the migration at start."""
        try:
            connection = await asyncpg.connect(admin_dsn(self.settings), timeout=10)
        except (OSError, asyncpg.PostgresError) as error:
            return {"error": f"{type(error).__name__}: {error}"}
        try:
            row = await connection.fetchrow(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted,"
                " tup_fetched, tup_returned, blks_read, blks_hit, deadlocks"
                " FROM pg_stat_database WHERE datname = $1",
                self.names.database,
            )
        except asyncpg.PostgresError as error:
            return {"error": f"{type(error).__name__}: {error}"}
        finally:
            await connection.close()
        return dict(row) if row is not None else {}

    async def settle_disk(self) -> None:
        """Flush what start-up wrote (the new database and its migrations, the previous run's
        dropped one) before the load starts: on a VM's shared disk such a write-back burst
        holds up the fsyncs of the commits that follow for 100s of ms, which would be measured
        as this run's latency. CHECKPOINT needs a superuser (or pg_checkpoint): without it the
        operating system's sync alone is done."""
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            connection = await asyncpg.connect(admin_dsn(self.settings), timeout=10)
            try:
                await connection.execute("CHECKPOINT")
            finally:
                await connection.close()
        await asyncio.to_thread(os.sync)
        await asyncio.sleep(0.5)

    async def clean_up(self) -> list[str]:
        """Drop this run's database and delete this run's stream keys; problems, if any."""
        problems: list[str] = []
        try:
            connection = await asyncpg.connect(admin_dsn(self.settings), timeout=10)
            try:
                quoted = '"' + self.names.database.replace('"', '""') + '"'
                await connection.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            finally:
                await connection.close()
        except (OSError, asyncpg.PostgresError) as error:
            problems.append(f"could not drop database {self.names.database}: {error}")
        client = redis_client(self.settings)
        try:
            await client.delete(*self.names.keys)
        except RedisError as error:
            problems.append(f"could not delete the keys of stream {self.names.stream}: {error}")
        finally:
            await client.aclose()
        return problems


def _readline(stream: Any, timeout: float) -> bytes:
    """One line from a child's pipe, or b"" after `timeout` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return b""
    line: bytes = stream.readline()
    return line
