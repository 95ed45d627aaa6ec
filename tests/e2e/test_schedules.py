"""Schedules end to end: two worker processes and an every-second schedule give exactly one
run per tick, none skipped; the API refuses a bad cron or time zone at its path and shows the
next fire times."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.support.waiting import eventually
from workflow_core.persistence.pool import Pool

pytestmark = pytest.mark.e2e


def every_second(**trigger: Any) -> dict[str, Any]:
    return {
        "name": "every second",
        "definition": {
            "trigger": {"type": "schedule", "cron": "* * * * * *", "catch_up": True, **trigger},
            "initial_step_id": "note",
            "steps": [
                {
                    "id": "note",
                    "type": "auto_action",
                    "actions": [
                        {
                            "type": "create_ticket",
                            "config": {"subject": "tick {data.scheduled_for}"},
                        }
                    ],
                }
            ],
        },
    }


async def _ticks(pool: Pool, workflow_id: str) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT context->'data'->>'scheduled_for' AS tick, status FROM runs "
        "WHERE workflow_id = $1::uuid",
        workflow_id,
    )
    return [(row["tick"], row["status"]) for row in rows]


async def test_two_workers_run_each_tick_once(stack: Stack, pool: Pool) -> None:
    stack.start_api()
    stack.start_worker("first")
    stack.start_worker("second")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        bad = every_second(cron="* * * 13 *", timezone="Mars/Olympus")
        refused = await client.post("/workflows", json=bad)
        assert refused.status_code == 422
        paths = {problem["path"] for problem in refused.json()["detail"]}
        assert paths == {"trigger.cron", "trigger.timezone"}, refused.text

        weekdays = every_second(cron="0 9 * * MON-FRI", timezone="Europe/Berlin")
        checked = await client.post("/workflows/validate", json=weekdays)
        assert checked.status_code == 200 and checked.json()["valid"], checked.text
        upcoming = [datetime.fromisoformat(t) for t in checked.json()["next_fire_times"]]
        assert len(upcoming) == 3 and upcoming == sorted(upcoming)
        assert all(t.weekday() < 5 and t.minute == 0 for t in upcoming)

        created = await client.post("/workflows", json=every_second())
        assert created.status_code == 201, created.text
        workflow_id = created.json()["id"]

        async def six() -> list[tuple[str, str]] | None:
            found = await _ticks(pool, workflow_id)
            return found if len(found) >= 6 else None

        before = await eventually(six, timeout=60, what="six ticks run")
        assert (await client.delete(f"/workflows/{workflow_id}")).status_code == 204

    async def settled() -> bool:
        return all(status == "completed" for _, status in await _ticks(pool, workflow_id))

    await eventually(settled, timeout=30, what="every tick's run completed")
    ticks = sorted(datetime.fromisoformat(tick) for tick, _ in await _ticks(pool, workflow_id))
    assert len(ticks) == len(set(ticks)), f"a tick ran twice: {ticks}"
    # None skipped: every second up to the last one seen before the workflow was deleted
    # (a tick queued as it was deleted may find it inactive and start nothing).
    last = max(datetime.fromisoformat(tick) for tick, _ in before)
    seconds = int((last - ticks[0]).total_seconds())
    assert ticks[: seconds + 1] == [ticks[0] + timedelta(seconds=n) for n in range(seconds + 1)]

    run_id = await pool.fetchval("SELECT id FROM runs WHERE workflow_id = $1::uuid", workflow_id)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        run = (await client.get(f"/runs/{run_id}")).json()
    assert run["status"] == "completed" and run["submission_id"] is None, run
    assert run["context"]["event_type"] == "schedule" and run["context"]["org_id"] is None
    assert set(run["context"]["data"]) == {"scheduled_for", "cron", "timezone", "missed"}
