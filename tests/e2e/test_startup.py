"""What a process says when it cannot start: a bad setting, or a database it cannot use, stops
`python -m services.api` and `python -m services.worker` with one line naming the setting,
never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT
from workflow_core.version import version

ENTRY_POINTS = ["services.api", "services.worker", "workflow_core.persistence.migrate"]


def _start(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run an entry point to its end; each case here stops it before any server is touched."""
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("module", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("name", "value"),
    [("WORKER_CONCURRENCY", "abc"), ("API_PORT", "-1"), ("DATABASE_URL", "mysql://x/y")],
)
def test_a_bad_setting_stops_the_process_with_one_line_naming_it(
    module: str, name: str, value: str
) -> None:
    ended = _start(module, **{name: value})

    assert ended.returncode != 0
    lines = ended.stderr.strip().splitlines()
    assert len(lines) == 1, ended.stderr
    assert name in lines[0] and "Traceback" not in ended.stderr


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_a_database_that_does_not_answer_stops_the_process_with_one_line(module: str) -> None:
    ended = _start(module, DATABASE_URL="postgresql://flowline:s3cret@127.0.0.1:1/x")

    assert ended.returncode != 0
    lines = ended.stderr.strip().splitlines()
    assert len(lines) == 1, ended.stderr
    assert "DATABASE_URL=postgresql://flowline:***@127.0.0.1:1/x" in lines[0]
    assert "s3cret" not in ended.stderr and "Traceback" not in ended.stderr


@pytest.mark.parametrize("module", ["services.api", "services.worker"])
def test_version_is_printed_without_touching_any_server(module: str) -> None:
    ended = _start(module, "--version", DATABASE_URL="postgresql://x@127.0.0.1:1/x")

    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.strip() == f"flowline {version()}"


@pytest.mark.parametrize("module", ["services.api", "services.worker"])
def test_a_short_task_link_secret_stops_the_process(module: str) -> None:
    """Approval links signed with a guessable key could decide any task: a TASK_LINK_SECRET
    that is too short stops the API and the workers alike, with one line that does not echo
    it. Neither process reaches the database (DATABASE_URL points nowhere)."""
    ended = _start(
        module,
        API_ADMIN_KEY="fl_admin_" + "x" * 40,
        TASK_LINK_SECRET="too-short",
        DATABASE_URL="postgresql://x@127.0.0.1:1/x",
    )
    assert ended.returncode != 0
    lines = ended.stderr.strip().splitlines()
    assert len(lines) == 1, ended.stderr
    assert "TASK_LINK_SECRET" in lines[0] and "Traceback" not in ended.stderr
    assert "too-short" not in lines[0]
