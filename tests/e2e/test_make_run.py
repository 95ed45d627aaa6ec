"""`make run` (dev/run.py) as a developer runs it: it starts the API, a worker and the catcher,
waits until each is up, prints a development admin key with a curl example, and stops
everything on Ctrl-C with exit code 0; a stack that does not come up, or a process of it that
dies, makes it exit non-zero."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.examples import EXAMPLE_FORM, EXAMPLE_WORKFLOW
from tests.support.net import free_port
from tests.support.processes import ROOT
from tests.support.services import Servers
from tests.support.waiting import eventually

KEY = re.compile(r"admin key\s+(fl_admin_[A-Za-z0-9_-]{32,})\s")


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    log_path: Path
    api: str
    catcher: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"make run exited {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout} s:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def children(self) -> dict[str, psutil.Process]:
        named = {}
        for child in psutil.Process(self.process.pid).children():
            command = " ".join(child.cmdline())
            for name in ("services.api", "services.worker", "dev.mailcatcher"):
                if f"-m {name}" in command:
                    named[name] = child
        return named


@pytest.fixture
def env(servers: Servers, database_url: str, stream_name: str, tmp_path: Path) -> dict[str, str]:
    """What a developer's shell would have, pointed at this test's database, stream and ports."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"API_ADMIN_KEY", "WEBHOOK_ALLOWED_HOSTS", "CATCHER", "API_TOKEN"}
    }
    env.update(
        DATABASE_URL=database_url,
        REDIS_HOST=servers.redis_host,
        REDIS_PORT=str(servers.redis_port),
        REDIS_PASSWORD=servers.redis_password,
        REDIS_STREAM_NAME=stream_name,
        API_HOST="127.0.0.1",
        API_PORT=str(free_port()),
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(free_port()),
        CATCHER_HTTP_PORT=str(free_port()),
        CATCHER_DIR=str(tmp_path / "mail"),
        WORKER_HEALTH_FILE=str(tmp_path / "worker.alive"),
        LOG_LEVEL="WARNING",
        RUN_START_TIMEOUT="60",
    )
    return env


def start_run(env: dict[str, str], tmp_path: Path, command: list[str] | None = None) -> Run:
    log_path = tmp_path / f"run-{time.time_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command or [sys.executable, "-m", "dev.run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Run(
        process,
        log_path,
        f"http://127.0.0.1:{env['API_PORT']}",
        f"http://127.0.0.1:{env['CATCHER_HTTP_PORT']}",
    )


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:  # a test that failed half-way leaves nothing running
        children = (
            list(psutil.Process(run.process.pid).children()) if run.process.poll() is None else []
        )
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGTERM)
        try:
            run.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            run.process.kill()
        for child in children:
            if child.is_running():
                child.kill()


async def test_make_run_starts_everything_prints_a_key_and_stops_on_ctrl_c(
    env: dict[str, str], tmp_path: Path, runs: list[Run]
) -> None:
    run = start_run(env, tmp_path)
    runs.append(run)
    run.wait_for("Press Ctrl-C to stop.")

    printed = run.log()
    key = KEY.search(printed)
    assert key, printed
    assert f'curl -s {run.api}/workflows -H "Authorization: Bearer {key[1]}"' in printed
    children = run.children()
    assert set(children) == {"services.api", "services.worker", "dev.mailcatcher"}
    assert children["services.api"].environ()["API_ADMIN_KEY"] == key[1]
    allowed = children["services.worker"].environ()["WEBHOOK_ALLOWED_HOSTS"].split(",")
    assert "127.0.0.1" in allowed
    listening = {conn.laddr[0] for conn in children["dev.mailcatcher"].net_connections("tcp")}
    assert listening == {"127.0.0.1"}, "the catcher listens on loopback only"

    headers = {"Authorization": f"Bearer {key[1]}"}
    async with httpx.AsyncClient(base_url=run.api, headers=headers, timeout=10) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        assert (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).status_code == 201
        assert (await client.post("/submit", json=EXAMPLE_FORM)).status_code == 202

    async with httpx.AsyncClient(base_url=run.catcher, timeout=10) as catcher:

        async def caught() -> list[Any]:
            return list((await catcher.get("/api/messages")).json()["emails"])

        (email,) = await eventually(caught, timeout=30, what="the example's email at the catcher")
        assert email["to"] == [EXAMPLE_FORM["data"]["email"]]
        page = await catcher.get("/")
        assert page.headers["content-type"].startswith("text/html")
        assert email["subject"] in page.text

    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=60) == 0, run.log()
    assert "Flowline stopped." in run.log()
    assert not any(child.is_running() for child in children.values())


def test_without_a_local_smtp_server_there_is_no_catcher_and_a_dead_worker_ends_the_run(
    env: dict[str, str], tmp_path: Path, runs: list[Run]
) -> None:
    env.update(SMTP_HOST="smtp.example.invalid", SMTP_PORT="587", API_ADMIN_KEY="k" * 32)
    run = start_run(env, tmp_path)
    runs.append(run)
    run.wait_for("Press Ctrl-C to stop.")

    assert "catcher      off (SMTP_HOST=smtp.example.invalid is not this machine)" in run.log()
    assert "(API_ADMIN_KEY from your settings)" in run.log()
    children = run.children()
    assert set(children) == {"services.api", "services.worker"}
    assert children["services.api"].environ()["API_ADMIN_KEY"] == "k" * 32

    children["services.worker"].kill()
    assert run.process.wait(timeout=60) == 1
    assert "make run: worker exited with -9; stopped the others" in run.log()
    assert not children["services.api"].is_running()


def test_make_run_exits_non_zero_when_the_stack_does_not_start(
    env: dict[str, str], tmp_path: Path, runs: list[Run]
) -> None:
    env["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/nowhere"
    run = start_run(env, tmp_path, ["make", "--no-print-directory", "run"])
    runs.append(run)

    assert run.process.wait(timeout=120) != 0, run.log()
    assert "make run: the stack did not start:" in run.log()
    assert "exited with" in run.log()
