"""One soak, start to end: set up the private services and Flowline's processes, load and
break them, heal, wait for the system to go quiet, check, and always clean up (stop the
processes and redis-server, drop the soak's database; nothing else is touched)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.engine import URL, make_url

from chaos import faults
from chaos.check import Facts, evaluate, read_database
from chaos.explain import explain
from chaos.faults import Injector
from chaos.flows import workflows
from chaos.load import Load, Person
from chaos.monitor import Monitor, stream_sample
from chaos.processes import API, ROOT, WORKER, Flowline
from chaos.proxy import TcpProxy
from chaos.receiver import WebhookReceiver
from chaos.redis_server import RedisServer
from chaos.report import evidence_text, say, table
from chaos.sink import SmtpSink

WORKERS = ("chaos-w1", "chaos-w2")
GROUP = "flowline"
GRACE_SECONDS = 10.0
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Flowline's settings for the soak: quick takeovers and retries, and limits high enough that
# faults never make Flowline give up on a healthy event. Settings a given version does not
# know are ignored by it.
SETTINGS = {
    "DB_POOL_SIZE": "4",  # two workers and the API stay well within max_connections
    "WORKER_CONCURRENCY": "16",
    "CLAIM_IDLE_SECONDS": "5",
    "CLAIM_INTERVAL_SECONDS": "1",
    "SMTP_TIMEOUT_SECONDS": "5",
    "SMTP_DATA_TIMEOUT_SECONDS": "60",
    "EVENT_RECONCILE_SECONDS": "10",
    "WORKER_HEARTBEAT_SECONDS": "2",
    "WORKER_DEAD_AFTER_SECONDS": "10",
    "WORKER_SHUTDOWN_GRACE_SECONDS": str(int(GRACE_SECONDS)),
    "ACTION_MAX_ATTEMPTS": "100",  # the most a retry policy allows
    "ACTION_RETRY_INITIAL_SECONDS": "0.5",
    "ACTION_RETRY_MAX_SECONDS": "4",
    "DELIVERY_LIMIT": "50",
    "WEBHOOK_TIMEOUT_SECONDS": "5",
    "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "SUBMIT_RATE_PER_ORG": "0",
    "FROM_EMAIL": "flowline@chaos.test",
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "json",
    "WORKER_METRICS_PORT": "0",  # several workers on one host: no port of their own
    "PYTHONUNBUFFERED": "1",
}
# Empty, whatever the environment or a .env file says: an open API on loopback, no logins.
EMPTY = ("API_TOKEN", "API_ADMIN_KEY", "SMTP_USER", "SMTP_PASSWORD", "REDIS_PASSWORD")


class SoakError(Exception):
    """The soak could not be set up (a service missing or not starting); says which."""


@dataclass(frozen=True)
class Options:
    minutes: float
    rate: float
    seed: int
    redis: Literal["aof", "memory", "alternate"]
    settle: float
    """Longest wait for the system to go quiet once the faults are healed."""
    kinds: tuple[faults.Kind, ...] = faults.KINDS
    """The kinds of fault to inject."""


def default_settle(minutes: float) -> float:
    """Long enough for every recovery path (a stale reservation, a claim, a reconciliation,
    a dead worker's emails "within about a minute"), short enough for the 1-minute test."""
    return min(300.0, 60.0 + 30.0 * minutes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Soak:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.token = secrets.token_hex(4)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir = ROOT / ".chaos" / f"{stamp}-seed{options.seed}"
        server = make_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
        self.server = server.set(drivername="postgresql")
        self.database = f"flowline_chaos_{self.token}"
        self.stream = f"chaos:{self.token}"
        self.api_port = free_port()
        self.proxy = TcpProxy(server.host or "127.0.0.1", server.port or 5432)
        self.sink = SmtpSink(self.run_dir, options.seed + 2)
        self.receiver = WebhookReceiver()
        self.redis_server: RedisServer | None = None

    # -- set-up and clean-up --------------------------------------------------------------------

    async def _admin(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(_dsn(self.server.set(database="postgres")), timeout=10)
        except (OSError, asyncpg.PostgresError) as error:
            where = self.server.render_as_string(hide_password=True)
            raise SoakError(f"PostgreSQL at {where} does not answer ({error}); start it") from None

    async def _create_database(self) -> None:
        admin = await self._admin()
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()

    async def _drop_database(self) -> None:
        admin = await self._admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await admin.close()

    def _env(self, redis_port: int) -> dict[str, str]:
        through_proxy = self.server.set(
            host="127.0.0.1", port=self.proxy.port, database=self.database
        )
        env = {**os.environ, **SETTINGS, **dict.fromkeys(EMPTY, "")}
        env.update(
            DATABASE_URL=through_proxy.render_as_string(hide_password=False),
            REDIS_HOST="127.0.0.1",
            REDIS_PORT=str(redis_port),
            REDIS_DB="0",
            REDIS_STREAM_NAME=self.stream,
            REDIS_CONSUMER_GROUP=GROUP,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(self.sink.port),
            SMTP_USE_TLS="false",
            API_HOST="127.0.0.1",
            API_PORT=str(self.api_port),
        )
        return env

    async def _start_services(self, stack: contextlib.AsyncExitStack) -> aioredis.Redis:
        if not RedisServer.available():
            raise SoakError("redis-server is not installed (the soak runs a private one)")
        await self._create_database()
        stack.push_async_callback(self._drop_database)
        await self.proxy.start()
        stack.push_async_callback(self.proxy.stop)
        data_dir = Path(tempfile.mkdtemp(prefix="flowline-chaos-redis-"))
        stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
        self.redis_server = RedisServer(data_dir, self.run_dir / "redis.log", free_port())
        await self.redis_server.start("memory" if self.options.redis == "memory" else "aof")
        stack.push_async_callback(self.redis_server.stop)
        await self.sink.start()
        stack.push_async_callback(self.sink.stop)
        await self.receiver.start()
        stack.push_async_callback(self.receiver.stop)
        redis = aioredis.Redis(port=self.redis_server.port, socket_timeout=5)
        stack.push_async_callback(redis.aclose)
        return redis

    async def _start_flowline(
        self, stack: contextlib.AsyncExitStack, client: httpx.AsyncClient, redis: aioredis.Redis
    ) -> Flowline:
        assert self.redis_server is not None
        flowline = Flowline(self.run_dir, self._env(self.redis_server.port))
        stack.callback(flowline.kill_all)
        stack.push_async_callback(flowline.stop_all)
        api = await flowline.start("api", API)
        await _until(lambda: _ready(client), 90, f"the API to be ready (see {api.log_path})")
        for workflow in workflows(self.receiver.url):
            response = await client.post("/workflows", json=workflow)
            if response.status_code != 201:
                raise SoakError(f"POST /workflows answered {response.status_code}: {response.text}")
        for name in WORKERS:
            await flowline.start(name, WORKER)

        async def consuming() -> bool:
            for name in WORKERS:
                life = flowline.current[name]
                if not life.running:
                    raise SoakError(f"{name} exited at start:\n{life.log_tail()}")
            with contextlib.suppress(RedisError):
                consumers = await redis.xinfo_consumers(self.stream, GROUP)
                names = {c["name"].decode() for c in consumers}
                return set(WORKERS) <= names
            return False

        await _until(consuming, 90, "both workers to read the stream")
        return flowline

    # -- the soak -------------------------------------------------------------------------------

    async def run(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        options = self.options
        say(
            f"seed {options.seed}; {options.minutes:g} min at {options.rate:g} forms/s; "
            f"redis {options.redis}; logs in {self.run_dir}"
        )
        async with contextlib.AsyncExitStack() as stack:
            redis = await self._start_services(stack)
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{self.api_port}",
                    timeout=httpx.Timeout(15.0, connect=5.0),
                    limits=httpx.Limits(max_connections=300, max_keepalive_connections=64),
                )
            )
            flowline = await self._start_flowline(stack, client, redis)
            say(f"API and workers {', '.join(WORKERS)} up; database {self.database}")
            return await self._soak(flowline, client, redis)
        raise AssertionError("unreachable")  # mypy: the exit stack may swallow exceptions

    async def _soak(
        self, flowline: Flowline, client: httpx.AsyncClient, redis: aioredis.Redis
    ) -> int:
        options = self.options
        assert self.redis_server is not None
        load_seconds = options.minutes * 60
        plan = faults.plan(random.Random(options.seed), load_seconds, WORKERS, options.kinds)
        (self.run_dir / "faults-plan.json").write_bytes(
            orjson.dumps([asdict(f) for f in plan], option=orjson.OPT_INDENT_2)
        )
        say(f"{len(plan)} faults planned: " + ", ".join(f"{f.kind}@{f.at:.0f}s" for f in plan))
        injector = Injector(
            flowline=flowline,
            redis=self.redis_server,
            redis_policy=options.redis,
            sink=self.sink,
            receiver=self.receiver,
            proxy=self.proxy,
            workers=WORKERS,
            grace_seconds=GRACE_SECONDS,
            say=say,
        )
        load = Load(client, options.rate, self.token, options.seed + 1)
        person = Person(client, self.sink.delivered_recipients)
        monitor = Monitor(flowline, redis, self.stream, GROUP, self.run_dir / "samples.jsonl")
        stop = asyncio.Event()
        background = [
            asyncio.create_task(person.run(stop), name="person"),
            asyncio.create_task(monitor.run(stop), name="monitor"),
            asyncio.create_task(self._watch(flowline, stop), name="watchdog"),
        ]
        t0, t0_wall = time.monotonic(), time.time()
        breaking = asyncio.create_task(injector.run(plan, t0), name="faults")
        try:
            await load.run(load_seconds)
            say(f"load over: {dict(load.counts())}")
            await _finish(breaking, timeout=90)
            healed = await injector.heal()
            say("healed: " + (", ".join(healed) or "nothing was broken"))
            settle_start = time.monotonic()
            quiescent, unchanged = await self._quiesce(redis, options.settle)
            settle_seconds = time.monotonic() - settle_start
            await asyncio.sleep(3)  # room for a late duplicate to show
        finally:
            stop.set()
            breaking.cancel()
            await _finish(*background, timeout=30)
        facts = Facts(
            outcomes=load.outcomes,
            late_sends=load.late,
            person=person.answers,
            db=await read_database(_dsn(self.server.set(database=self.database))),
            sink=self.sink.records(),
            webhooks=list(self.receiver.calls),
            samples=monitor.samples,
            injected=injector.injected,
            unexpected_exits=[life.describe_exit() for life in flowline.unexpected_exits],
            t0_wall=t0_wall,
            quiescent=quiescent,
            settle_seconds=settle_seconds,
            unchanged_seconds=unchanged,
        )
        return await self._report(facts, flowline)

    async def _report(self, facts: Facts, flowline: Flowline) -> int:
        """Print the table, keep it and the evidence in the run directory; the exit status."""
        options = self.options
        assert self.redis_server is not None
        findings = evaluate(facts)
        records = await explain(
            dsn=_dsn(self.server.set(database=self.database)),
            runs=findings.runs_to_explain,
            submissions=findings.submissions_to_explain,
            logs=[life.log_path for life in flowline.lifetimes],
            t0_wall=facts.t0_wall,
        )
        header = [
            f"chaos soak  seed {options.seed}  {options.minutes:g} min  {options.rate:g} forms/s"
            f"  workers {len(WORKERS)}  faults {_faults_named(options.kinds)}"
            f"  redis {options.redis} (starts: {', '.join(self.redis_server.modes)})",
            f"run directory {self.run_dir}",
        ]
        text = table(header, findings)
        (self.run_dir / "report.txt").write_text(text)
        (self.run_dir / "evidence.txt").write_text(evidence_text(findings) + records)
        print(text, end="", flush=True)
        return 1 if findings.failures else 0

    async def _watch(self, flowline: Flowline, stop: asyncio.Event) -> None:
        """Restart a process that exited by itself, so the soak goes on (it is reported)."""
        while not stop.is_set():
            for life in await flowline.restart_unexpected():
                say(f"{life.label} exited by itself (code {life.returncode}); started again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)

    async def _quiesce(self, redis: aioredis.Redis, timeout: float) -> tuple[bool, float]:
        """Wait until every run finished, every submission has its run, no human task is
        pending, the outbox is published and nothing is pending on the stream: twice in a
        row, two seconds apart. (Whether it got there before `timeout`, and for how many
        seconds at the end the state had not changed: what is stuck stays stuck.)"""
        dsn = _dsn(self.server.set(database=self.database))
        started = time.monotonic()
        deadline = started + timeout
        previous: dict[str, int] = {}
        changed, next_report = started, 0.0
        while time.monotonic() < deadline:
            state = await _state(dsn, redis, self.stream)
            if state != previous:
                changed = time.monotonic()
            quiet = all(value == 0 for value in state.values())
            if quiet and state == previous:
                say(f"quiet: {state}")
                return True, time.monotonic() - changed
            previous = state
            if time.monotonic() >= next_report:
                say(f"waiting for quiet ({deadline - time.monotonic():.0f}s left): {state}")
                next_report = time.monotonic() + 15
            await asyncio.sleep(2)
        say(f"not quiet after {timeout:.0f}s: {previous}")
        return False, time.monotonic() - changed


_STATE = """
    SELECT
      (SELECT count(*) FROM runs
        WHERE status NOT IN ('completed', 'failed', 'cancelled')) AS unfinished_runs,
      (SELECT count(*) FROM submissions s
        WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.submission_id = s.id)) AS without_run,
      (SELECT count(*) FROM tasks WHERE kind = 'human' AND status = 'pending') AS pending_tasks,
      (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS outbox
"""


async def _state(dsn: str, redis: aioredis.Redis, stream: str) -> dict[str, int]:
    """What is still to be done (every value 0 when the system is quiet); -1: unreadable."""
    state = dict.fromkeys(("unfinished_runs", "without_run", "pending_tasks", "outbox"), -1)
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            row = await connection.fetchrow(_STATE)
            assert row is not None
            state.update(dict(row))
        finally:
            await connection.close()
    sample = await stream_sample(redis, stream, GROUP)
    state["stream_pending"] = -1 if sample.pending is None else sample.pending
    state["stream_lag"] = sample.lag or 0  # None: Redis cannot tell (entries were deleted)
    return state


def _faults_named(kinds: tuple[faults.Kind, ...]) -> str:
    if kinds == faults.KINDS:
        return "all"
    return ",".join(kinds) or "none"


async def _finish(*tasks: asyncio.Task[None], timeout: float) -> None:
    """Let the harness's own tasks end (cancelled after `timeout`); a task that failed is the
    harness's failure, not Flowline's: SoakError."""
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
        say(f"{task.get_name()} still running after {timeout:.0f}s: cancelled")
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise SoakError(f"{task.get_name()} failed: {type(error).__name__}: {error}")


async def _ready(client: httpx.AsyncClient) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return (await client.get("/readyz")).status_code == 200
    return False


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise SoakError(f"timed out after {timeout:.0f}s waiting for {what}")
