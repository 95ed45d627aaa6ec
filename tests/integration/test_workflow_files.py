"""`python -m services.api workflows apply|diff|export` against the test database, run as the
command a CI step would run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import settings_env
from workflow_core.persistence import schedules, workflows
from workflow_core.persistence.pool import Pool
from workflow_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

REPORT = """\
key: weekday-report
name: Weekday report
org_id: org_files
definition:
  trigger:
    type: schedule
    cron: "0 9 * * MON-FRI"
    timezone: Europe/Berlin
  initial_step_id: notify
  steps:
    - id: notify
      type: auto_action
      actions:
        - type: webhook
          config:
            url: https://hooks.example.com/report
            secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
"""


def _cli(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.api", "workflows", *arguments],
        cwd=ROOT,
        env={**settings_env(settings), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def cli(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_cli, settings, *arguments)


async def test_apply_diff_export_round_trip(settings: Settings, pool: Pool, tmp_path: Path) -> None:
    source = tmp_path / "flows"
    source.mkdir()
    (source / "report.yaml").write_text(REPORT)

    planned = await cli(settings, "diff", str(source))
    assert planned.returncode == 0, planned.stderr
    checked = await cli(settings, "diff", "--exit-code", str(source))
    assert checked.returncode == 2, checked.stderr  # something to apply
    assert checked.stdout == planned.stdout  # the same diff, not a usage error
    assert "--- /dev/null" in planned.stdout
    assert '+    "initial_step_id": "notify",' in planned.stdout
    assert SECRET not in planned.stdout
    assert await workflows.by_key(pool, "org_files", "weekday-report") is None

    applied = await cli(settings, "apply", str(source))
    assert applied.returncode == 0, applied.stderr
    assert "created weekday-report" in applied.stdout
    record = await workflows.by_key(pool, "org_files", "weekday-report")
    assert record is not None and record.version == 1 and record.name == "Weekday report"
    assert await schedules.get(pool, record.id) is not None

    again = await cli(settings, "apply", str(source))
    assert "unchanged" in again.stdout
    in_step = await cli(settings, "diff", "--exit-code", str(source))
    assert in_step.returncode == 0, in_step.stdout  # nothing to apply
    assert (await workflows.get(pool, record.id)).version == 1  # type: ignore[union-attr]

    exported = tmp_path / "exported"
    done = await cli(settings, "export", str(exported), "--org", "org_files")
    assert done.returncode == 0, done.stderr
    written = (exported / "weekday-report.yaml").read_text()
    assert SECRET not in written and "secret is set and not exported" in written
    document = yaml.safe_load(written)
    assert document["key"] == "weekday-report" and document["org_id"] == "org_files"

    # The exported file, changed, applied: a new version that keeps the secret.
    document["definition"]["trigger"]["cron"] = "30 8 * * MON-FRI"
    (exported / "weekday-report.yaml").write_text(yaml.safe_dump(document))
    changed = await cli(settings, "apply", "--dry-run", str(exported))
    assert '-      "cron": "0 9 * * MON-FRI",' in changed.stdout
    assert '+      "cron": "30 8 * * MON-FRI",' in changed.stdout
    assert (await workflows.get(pool, record.id)).version == 1  # type: ignore[union-attr]
    updated = await cli(settings, "apply", str(exported))
    assert "updated weekday-report to version 2" in updated.stdout, updated.stderr
    now = await workflows.get(pool, record.id)
    assert now is not None and now.version == 2
    webhook = now.definition["steps"][0]["actions"][0]["config"]
    assert webhook["secret"] == SECRET


async def test_invalid_files_name_their_paths_and_apply_nothing(
    settings: Settings, pool: Pool, tmp_path: Path
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(REPORT.replace("weekday-report", "good-one"))
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"key": "bad-one", "definition": {"trigger": {"type": "schedule", "cron": "61 * * * *",'
        ' "timezone": "Mars/Olympus"}, "initial_step_id": "a", "steps": [{"id": "a",'
        ' "type": "auto_action", "transitions": [{"to": "nowhere"}]}]}}'
    )
    nokey = tmp_path / "nokey.yaml"
    nokey.write_text("name: x\ndefinition: {}\n")
    done = await cli(settings, "apply", str(tmp_path))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert f"{bad}: definition.trigger.cron: invalid cron expression '61 * * * *': " in "\n".join(
        lines
    )
    assert any(line.startswith(f"{bad}: definition.trigger.timezone: ") for line in lines)
    assert any(line.startswith(f"{bad}: definition.steps[0].transitions[0].to: ") for line in lines)
    assert any(line.startswith(f"{nokey}: key: ") for line in lines)
    assert await workflows.by_key(pool, "org_files", "good-one") is None
