"""The chaos soak (`make chaos`, chaos/) for one minute: forms at a steady rate through the API
while workers are killed and stopped, Redis comes back empty, PostgreSQL is cut off, the SMTP
server sits on the final dot or drops connections mid-DATA and the webhook receiver fails or
hangs. It passes when nothing was lost and nothing was sent twice (CONTRACT §5).

The soak runs as a process, as `make chaos` runs it; its table is printed (`pytest -s`, or
with the failure) and its logs stay under .chaos/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import Servers

pytestmark = [pytest.mark.e2e, pytest.mark.faults]
ROOT = Path(__file__).resolve().parents[2]
# One minute of load, at most 90 s for the system to go quiet, set-up and clean-up.
SOAK_SECONDS = 240


@pytest.mark.timeout(SOAK_SECONDS + 30)
def test_a_one_minute_soak_under_faults_loses_nothing_and_sends_nothing_twice(
    servers: Servers,
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed here (the soak runs a private one)")
    soak = subprocess.Popen(
        [sys.executable, "-m", "chaos", "--minutes", "1", "--rate", "20"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": servers.database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = soak.communicate(timeout=SOAK_SECONDS)
    except subprocess.TimeoutExpired:
        soak.terminate()  # the soak cleans up on SIGTERM: processes, redis-server, database
        output, _ = soak.communicate(timeout=60)
    print(output)
    verdict = (output.strip().splitlines() or ["no output"])[-1]
    assert soak.returncode == 0, verdict
