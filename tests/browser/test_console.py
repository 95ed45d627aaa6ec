"""The console in a real browser (headless Chromium), against the API and a worker started as
processes: sign in by keyboard, find a run and read its timeline, complete a task from the
inbox, read a workflow's definition, replay a dead letter; every page is usable at 360 px.
One stack for the module; each flow is a test of its own. Screenshots: see conftest.py."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Page, expect

from tests.browser.conftest import Shoot
from tests.conftest import Stack, module_stack
from tests.support.services import Servers
from tests.support.waiting import eventually
from workflow_core import events
from workflow_core.adapters.streams import StreamKeys
from workflow_core.ids import new_id

ADMIN = "fl_admin_" + uuid.uuid4().hex + uuid.uuid4().hex
ORG = "acme"


def approval() -> dict[str, Any]:
    return {
        "name": "Expense approval",
        "definition": {
            "trigger": {"type": "form_submitted"},
            "initial_step_id": "review",
            "steps": [
                {"id": "review", "type": "human_task",
                 "config": {"title": "Approve {data.name}'s expense", "assignee": "ana@acme.test"},
                 "transitions": [{"to": "notify"}]},
                {"id": "notify", "type": "auto_action", "actions": [
                    {"type": "webhook", "retry": {"max_attempts": 2, "initial_delay": 0},
                     "config": {"url": "http://127.0.0.1:9/expenses"}}]},
            ],
        },
    }  # fmt: skip


@dataclass
class World:
    stack: Stack
    admin_key: str
    tasks_key: str
    failed_run: str
    waiting_run: str


async def _key(client: httpx.AsyncClient, scope: str, name: str) -> str:
    made = await client.post(
        "/api-keys",
        json={"org_id": ORG, "scopes": [scope], "name": name},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


async def _run_of(client: httpx.AsyncClient, admin: dict[str, str], name: str, status: str) -> str:
    submit = await client.post(
        "/submit", json={"template_id": "expense", "data": {"name": name}}, headers=admin
    )
    submission = submit.json()["submission_id"]

    async def reached() -> str | None:
        found = (await client.get(f"/submissions/{submission}", headers=admin)).json()
        return next((r["id"] for r in found["runs"] if r["status"] == status), None)

    return await eventually(reached, timeout=30, what=f"{name}'s run {status}")


@pytest.fixture(scope="module")
async def world(
    servers: Servers, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    async with module_stack(
        servers,
        template_database,
        tmp_path_factory.mktemp("logs"),
        api_admin_key=ADMIN,
        metrics_sample_seconds=1,  # the numbers page shows the failed run within a second
    ) as stack:
        stack.start_api()
        stack.start_worker("worker")
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
            admin_key = await _key(client, "admin", "Ops team")
            tasks_key = await _key(client, "tasks", "Reviewers")
            admin = {"Authorization": f"Bearer {admin_key}"}
            created = await client.post("/workflows", json=approval(), headers=admin)
            assert created.status_code == 201, created.text
            failing = await _run_of(client, admin, "Grace", "waiting")
            [task] = (await client.get("/tasks", params={"run_id": failing}, headers=admin)).json()
            await client.post(
                f"/tasks/{task['id']}/complete", json={"outcome": "approved"}, headers=admin
            )
            await _run_of(client, admin, "Ada", "waiting")
            waiting = await _run_of(client, admin, "Linus", "waiting")

            async def failed() -> bool:
                run = (await client.get(f"/runs/{failing}", headers=admin)).json()
                return bool(run["status"] == "failed")

            await eventually(failed, timeout=30, what="Grace's run failed at its webhook")
        yield World(stack, admin_key, tasks_key, failing, waiting)


async def sign_in(page: Page, world: World, key: str, who: str = "") -> None:
    """By keyboard only: the form's fields are reached with Tab and sent with Enter."""
    await page.goto(f"{world.stack.base_url}/console")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("API key").focus()
    await page.keyboard.type(key)
    await page.keyboard.press("Tab")
    await page.keyboard.type(who)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def fits_360(page: Page) -> None:
    """Nothing but the tables' own scrolling regions is wider than a 360 px screen."""
    await page.set_viewport_size({"width": 360, "height": 740})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"{page.url} is {width} px wide at 360 px"
    await page.set_viewport_size({"width": 1280, "height": 800})


async def test_sign_in_find_the_failed_run_and_read_its_timeline(
    page: Page, world: World, shoot: Shoot
) -> None:
    await sign_in(page, world, world.admin_key)
    await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    await page.get_by_label("Status").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("link", name=world.waiting_run)).to_have_count(0)
    await shoot(page, "console-runs", docs=True)
    await fits_360(page)
    await page.get_by_role("link", name=world.failed_run).click()
    await expect(page.get_by_role("heading", name="Step 1: review")).to_be_visible()
    await expect(page.get_by_role("heading", name="Step 2: notify")).to_be_visible()
    attempts = page.get_by_role("region", name="Action attempts of step notify")
    await expect(attempts.get_by_role("row")).to_have_count(3)  # a header and two attempts
    await expect(attempts).to_contain_text("127.0.0.1:9")
    await expect(page.get_by_role("button", name="Retry this run")).to_be_visible()
    await shoot(page, "console-run", docs=True)
    await fits_360(page)


async def test_complete_a_task_from_the_inbox(page: Page, world: World, shoot: Shoot) -> None:
    await sign_in(page, world, world.tasks_key, who="ana@acme.test")
    await expect(page.get_by_role("heading", name="Task inbox")).to_be_visible()
    await page.get_by_role("link", name="Mine").click()
    card = page.get_by_role("listitem").filter(has_text="Approve Linus's expense")
    await expect(card).to_be_visible()
    await shoot(page, "console-inbox", docs=True)
    await fits_360(page)
    await card.get_by_label("Outcome").fill("approved")
    await card.get_by_label("Comment").fill("Receipts attached, fine.")
    await card.get_by_role("button", name="Complete “Approve Linus's expense”").click()
    await expect(page.get_by_role("status")).to_contain_text("completed")
    await expect(page.get_by_role("heading", name="Approve Linus's expense")).to_have_count(0)
    await expect(page.get_by_role("heading", name="Approve Ada's expense")).to_be_visible()


async def test_read_a_workflows_definition(page: Page, world: World, shoot: Shoot) -> None:
    await sign_in(page, world, world.admin_key)
    await page.get_by_role("link", name="Workflows").click()
    await shoot(page, "console-workflows", docs=True)
    await page.get_by_role("link", name="Expense approval").click()
    await expect(page.get_by_role("link", name="Version 1")).to_be_visible()
    await expect(page.locator("pre.definition")).to_contain_text('"initial_step_id": "review"')
    await fits_360(page)


async def test_replay_a_dead_letter(page: Page, world: World, shoot: Shoot) -> None:
    settings = world.stack.settings
    keys = StreamKeys.from_settings(settings)
    redis = aioredis.Redis(host=settings.redis_host, port=settings.redis_port)
    event = events.form_submitted(new_id(), new_id(), "expense", ORG, {}, datetime.now(UTC))
    fields = {**event.to_fields(), "error": "handler crashed: KeyError 'amount'", "deliveries": "5"}
    entry = (await redis.xadd(keys.dead, fields)).decode()
    await redis.aclose()
    await sign_in(page, world, ADMIN, who="ops@acme.test")
    await page.get_by_role("link", name="Dead letters").click()
    letter = page.get_by_role("listitem").filter(has_text=entry)
    await expect(letter).to_contain_text("handler crashed: KeyError 'amount'")
    await shoot(page, "console-dead-letters", docs=True)
    await fits_360(page)
    await letter.get_by_role("button", name="Replay").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Dead letter {entry} replayed.")
    await expect(page.get_by_role("listitem").filter(has_text=entry)).to_contain_text("Replays1")


async def test_the_numbers_refresh_by_themselves(page: Page, world: World) -> None:
    await sign_in(page, world, world.tasks_key)
    await page.get_by_role("link", name="Numbers").click()
    table = page.get_by_role("table")
    failed = table.get_by_role("row", name="Runs (failed)")
    count = failed.get_by_role("cell").first
    await expect(count).to_have_text(re.compile(r"^[1-9][0-9]*$"), timeout=15_000)  # Grace's
    caption = await table.locator("caption").inner_text()
    assert caption.startswith("As of"), caption
    # console.js replaces the table every 5 s: its time moves on without a reload.
    await expect(table.locator("caption")).not_to_have_text(caption, timeout=12_000)
    await fits_360(page)
