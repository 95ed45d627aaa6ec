"""A worker's container health check: the worker keeps WORKER_HEALTH_FILE fresh while it runs
and deletes it when it stops; `python -m services.worker.healthcheck` reads it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from services.worker.healthcheck import verdict
from tests.conftest import Stack
from tests.support.processes import ROOT
from tests.support.waiting import eventually


def healthcheck(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.worker.healthcheck"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_the_worker_keeps_its_health_file_fresh_and_deletes_it_when_it_stops(
    stack: Stack, tmp_path: Path
) -> None:
    health = tmp_path / "worker.alive"
    env = {"WORKER_HEALTH_FILE": str(health), "WORKER_HEARTBEAT_SECONDS": "0.2"}
    worker = stack.start_worker(**env)

    await eventually(health.exists, timeout=30, what="the health file")
    first = health.stat().st_mtime
    await eventually(lambda: health.stat().st_mtime > first, timeout=10, what="a renewal")
    checked = healthcheck(**stack.env(**env))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("healthy")

    assert worker.stop(timeout=20) == 0
    assert not health.exists()
    stopped = healthcheck(**stack.env(**env))
    assert stopped.returncode == 1
    assert "does not exist" in stopped.stderr and len(stopped.stderr.splitlines()) == 1


def test_a_stale_or_missing_file_is_unhealthy_and_a_fresh_one_healthy(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    assert "does not exist" in str(verdict(path, 30, time.time()))
    path.touch()
    now = path.stat().st_mtime
    assert verdict(path, 30, now + 29) is None
    assert "31 s ago" in str(verdict(path, 30, now + 31))


def test_without_a_health_file_setting_the_check_says_so() -> None:
    checked = healthcheck(WORKER_HEALTH_FILE="")
    assert checked.returncode == 1
    assert "WORKER_HEALTH_FILE is not set" in checked.stderr


def test_a_bad_setting_fails_the_check_with_one_line() -> None:
    checked = healthcheck(WORKER_HEALTH_FILE="/tmp/x", WORKER_DEAD_AFTER_SECONDS="abc")
    assert checked.returncode != 0
    assert "WORKER_DEAD_AFTER_SECONDS" in checked.stderr and "Traceback" not in checked.stderr
