"""The console at /console, with the API in this process and a worker beside it: signing in
(a good key, a bad one, a `submit` key, a revoked one), the cookie's flags, CSRF and Origin
checks, each page with what it must show, and completing a task, retrying a run and replaying
a dead letter through its forms. Organisations are kept apart (test_isolation.py)."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from services.api.console.session import COOKIE
from tests.conftest import module_stack
from tests.support.flows import running_worker
from tests.support.inprocess import InProcessApi, in_process_api
from tests.support.services import Servers
from tests.support.waiting import eventually
from workflow_core import events
from workflow_core.adapters.streams import StreamKeys
from workflow_core.ids import new_id
from workflow_core.settings import Settings

ADMIN = "fl_admin_" + uuid.uuid4().hex + uuid.uuid4().hex
ORG = "org_console"
ORIGIN = {"Origin": "http://flowline.test"}


def approval() -> dict[str, Any]:
    return {
        "name": "Approval",
        "definition": {
            "trigger": {"type": "form_submitted"},
            "initial_step_id": "review",
            "steps": [
                {
                    "id": "review",
                    "type": "human_task",
                    "config": {"title": "Review {data.name}", "assignee": "ana@example.com"},
                    "transitions": [{"to": "call", "conditions": {
                        "path": "task.outcome", "op": "==", "value": "rejected"}}],
                },
                {
                    "id": "call",
                    "type": "auto_action",
                    "actions": [{"type": "webhook", "retry": {
                        "max_attempts": 2, "initial_delay": 0},
                        "config": {"url": "http://127.0.0.1:9/refused"}}],
                },
            ],
        },
    }  # fmt: skip


@dataclass
class Service:
    """One API (in this process) and worker for the module, with ORG's keys and workflow."""

    api: InProcessApi
    settings: Settings
    keys: dict[str, dict[str, Any]]
    workflow: str


@dataclass
class World:
    """What a test starts from: a browser of its own (its own cookies) and a fresh run of
    the approval workflow waiting for its task."""

    client: httpx.AsyncClient
    service: Service
    name: str
    run: str
    task: str

    @property
    def keys(self) -> dict[str, dict[str, Any]]:
        return self.service.keys

    @property
    def workflow(self) -> str:
        return self.service.workflow

    def bearer(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]['key']}"}


async def _key(client: httpx.AsyncClient, scope: str, name: str) -> dict[str, Any]:
    made = await client.post(
        "/api-keys",
        json={"org_id": ORG, "scopes": [scope], "name": name},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


@pytest.fixture(scope="module")
async def service(
    servers: Servers, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    async with module_stack(
        servers, template_database, tmp_path_factory.mktemp("logs"), api_admin_key=ADMIN
    ) as stack:
        settings = stack.settings
        async with in_process_api(settings) as api, running_worker(settings):
            keys = {
                scope: await _key(api.client, scope, f"{scope} key")
                for scope in ("submit", "tasks", "admin")
            }
            admin = {"Authorization": f"Bearer {keys['admin']['key']}"}
            created = await api.client.post("/workflows", json=approval(), headers=admin)
            assert created.status_code == 201, created.text
            yield Service(api, settings, keys, created.json()["id"])


@pytest.fixture
async def world(service: Service) -> AsyncIterator[World]:
    transport = httpx.ASGITransport(app=service.api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://flowline.test") as client:
        name = f"Ada {uuid.uuid4().hex[:6]}"
        run, task = await waiting_run(client, service, name)
        yield World(client, service, name, run, task)


async def waiting_run(client: httpx.AsyncClient, service: Service, name: str) -> tuple[str, str]:
    """A new submission's run of the approval workflow, waiting for its task."""
    admin = {"Authorization": f"Bearer {service.keys['admin']['key']}"}
    submitted = await client.post(
        "/submit",
        json={"template_id": "t", "data": {"name": name}},
        headers={"Authorization": f"Bearer {service.keys['submit']['key']}"},
    )
    submission = submitted.json()["submission_id"]

    async def waiting() -> dict[str, Any] | None:
        found = (await client.get(f"/submissions/{submission}", headers=admin)).json()
        return next(
            (
                r
                for r in found["runs"]
                if r["status"] == "waiting" and r["workflow_id"] == service.workflow
            ),
            None,
        )

    run = await eventually(waiting, timeout=30, what="the run waiting for its task")
    [task] = (await client.get("/tasks", params={"run_id": run["id"]}, headers=admin)).json()
    return run["id"], task["id"]


async def sign_in(client: httpx.AsyncClient, key: str, who: str = "") -> httpx.Response:
    return await client.post(
        "/console/sign-in", data={"key": key, "who": who, "next": "/console"}, headers=ORIGIN
    )


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


async def test_sign_in_gives_a_strict_http_only_cookie_naming_the_key_id(world: World) -> None:
    admin = world.keys["admin"]
    answer = await sign_in(world.client, admin["key"])
    assert answer.status_code == 303 and answer.headers["location"] == "/console"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Max-Age=28800" in cookie  # CONSOLE_SESSION_HOURS=8
    value = world.client.cookies[COOKIE]
    assert admin["key"] not in value
    payload = orjson.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
    assert payload["key"] == admin["id"] and payload["who"] == "admin key"
    home = await world.client.get("/console")
    assert (home.status_code, home.headers["location"]) == (303, "/console/runs")


async def test_bad_keys_and_no_session_are_refused(world: World) -> None:
    client = world.client
    nobody = await client.get("/console/runs?status=failed")
    assert nobody.status_code == 303
    assert nobody.headers["location"] == "/console/sign-in?next=/console/runs%3Fstatus%3Dfailed"
    unknown = await sign_in(client, "fl_live_" + "x" * 43)
    assert unknown.status_code == 401 and "not valid" in unknown.text
    submit_only = await sign_in(client, world.keys["submit"]["key"])
    assert submit_only.status_code == 403 and "only the `submit` scope" in submit_only.text
    assert COOKIE not in client.cookies
    client.cookies.set(COOKIE, "forged.signature", path="/console")
    assert (await client.get("/console/runs")).status_code == 303
    elsewhere = await client.post(
        "/console/sign-in",
        data={"key": world.keys["admin"]["key"]},
        headers={"Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403 and "another site" in elsewhere.text


async def test_a_revoked_key_ends_its_sessions(world: World) -> None:
    key = await _key(world.client, "admin", "soon revoked")
    await sign_in(world.client, key["key"])
    assert (await world.client.get("/console/runs")).status_code == 200
    revoked = await world.client.delete(
        f"/api-keys/{key['id']}", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert revoked.status_code == 204
    after = await world.client.get("/console/runs")
    assert after.status_code == 303 and after.headers["location"].startswith("/console/sign-in")


async def test_a_post_without_its_csrf_token_or_from_another_origin_is_refused(
    world: World,
) -> None:
    client = world.client
    await sign_in(client, world.keys["tasks"]["key"])
    inbox = await client.get("/console/inbox")
    token = csrf_of(inbox)
    url = f"/console/tasks/{world.task}/complete"
    missing = await client.post(url, data={"outcome": "approved"}, headers=ORIGIN)
    assert missing.status_code == 403 and "CSRF" in missing.text
    wrong = await client.post(url, data={"outcome": "approved", "csrf": "x"}, headers=ORIGIN)
    assert wrong.status_code == 403
    foreign = await client.post(
        url, data={"outcome": "approved", "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    task = await client.get(
        f"/tasks/{world.task}", headers={"Authorization": f"Bearer {world.keys['tasks']['key']}"}
    )
    assert task.json()["status"] == "pending"


async def test_the_inbox_completes_a_task_with_an_outcome_and_a_comment(world: World) -> None:
    client = world.client
    await sign_in(client, world.keys["tasks"]["key"], who="ana@example.com")
    assert (await client.get("/console")).headers["location"] == "/console/inbox"
    assert (await client.get("/console/runs")).status_code == 403  # `tasks` sees the inbox only
    for view in ("pending", "mine"):
        page = await client.get("/console/inbox", params={"view": view})
        assert page.status_code == 200 and f"Review {world.name}" in page.text, view
    overdue = await client.get("/console/inbox", params={"view": "overdue"})
    assert "Review Ada" not in overdue.text and "Nothing here." in overdue.text
    done = await client.post(
        f"/console/tasks/{world.task}/complete",
        data={"outcome": "rejected", "comment": "Not this time", "csrf": csrf_of(overdue)},
        headers=ORIGIN,
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/console/inbox?view=pending&done={world.task}"
    task = (
        await client.get(
            f"/tasks/{world.task}",
            headers={"Authorization": f"Bearer {world.keys['tasks']['key']}"},
        )
    ).json()
    assert (task["status"], task["outcome"], task["completed_by"]) == (
        "completed",
        "rejected",
        "ana@example.com",
    )
    assert task["data"] == {"comment": "Not this time"}
    again = await client.post(
        f"/console/tasks/{world.task}/complete", data={"csrf": csrf_of(overdue)}, headers=ORIGIN
    )
    assert again.status_code == 409


async def _failed_run(world: World) -> dict[str, Any]:
    """The task rejected: the run goes on to a webhook nothing answers, and fails."""
    admin = {"Authorization": f"Bearer {world.keys['admin']['key']}"}
    await world.client.post(
        f"/tasks/{world.task}/complete", json={"outcome": "rejected"}, headers=admin
    )

    async def failed() -> dict[str, Any] | None:
        run = (await world.client.get(f"/runs/{world.run}", headers=admin)).json()
        return run if run["status"] == "failed" else None

    return await eventually(failed, timeout=30, what="the run failed at its webhook")


async def test_runs_pages_show_the_timeline_and_retry_a_failed_run(world: World) -> None:
    await _failed_run(world)
    client = world.client
    await sign_in(client, world.keys["admin"]["key"])
    listed = await client.get("/console/runs", params={"status": "failed"})
    assert listed.status_code == 200 and world.run in listed.text
    assert world.run not in (await client.get("/console/runs?status=completed")).text
    since = await client.get("/console/runs", params={"since": "2999-01-01T00:00"})
    assert world.run not in since.text and "No run matches." in since.text
    bad = await client.get("/console/runs", params={"since": "yesterday"})
    assert bad.status_code == 422 and "since must be a date" in bad.text
    page = await client.get(f"/console/runs/{world.run}")
    assert page.status_code == 200
    for shown in ("Step 1: review", "Step 2: call", "webhook", "Retry this run", "rejected"):
        assert shown in page.text, shown
    assert "127.0.0.1:9" in page.text  # the attempts' errors name the refused address
    retried = await client.post(
        f"/console/runs/{world.run}/retry", data={"csrf": csrf_of(page)}, headers=ORIGIN
    )
    assert retried.status_code == 303 and retried.headers["location"].endswith("?retried=1")


async def test_a_waiting_run_is_cancelled_from_its_page(world: World) -> None:
    """The run waits for its task: its page offers to cancel it. Cancelled with a reason,
    the run is `cancelled` with that reason, its task too, and the page offers it no more;
    a second cancel is a 409 page, a cancel without the CSRF token is refused, and a reason
    longer than the API takes is a 422 naming it (the run left as it was)."""
    client = world.client
    await sign_in(client, world.keys["admin"]["key"])
    page = await client.get(f"/console/runs/{world.run}")
    assert "Cancel this run" in page.text and 'for="reason"' in page.text
    forged = await client.post(
        f"/console/runs/{world.run}/cancel", data={"reason": "x"}, headers=ORIGIN
    )
    assert forged.status_code == 403
    too_long = await client.post(
        f"/console/runs/{world.run}/cancel",
        data={"csrf": csrf_of(page), "reason": "x" * 501},
        headers=ORIGIN,
    )
    assert too_long.status_code == 422 and "reason" in too_long.text, too_long.text
    cancelled = await client.post(
        f"/console/runs/{world.run}/cancel",
        data={"csrf": csrf_of(page), "reason": "sent to the wrong team"},
        headers=ORIGIN,
    )
    assert cancelled.status_code == 303, cancelled.text
    assert cancelled.headers["location"].endswith("?cancelled=1")
    admin = world.bearer("admin")
    run = (await client.get(f"/runs/{world.run}", headers=admin)).json()
    assert (run["status"], run["error"]) == ("cancelled", "cancelled: sent to the wrong team")
    task = (await client.get(f"/tasks/{world.task}", headers=admin)).json()
    assert task["status"] == "cancelled"
    after = await client.get(f"/console/runs/{world.run}")
    assert "Cancel this run" not in after.text and "sent to the wrong team" in after.text
    again = await client.post(
        f"/console/runs/{world.run}/cancel", data={"csrf": csrf_of(after)}, headers=ORIGIN
    )
    assert again.status_code == 409 and "already cancelled" in again.text


async def test_runs_are_paged_with_a_cursor(world: World) -> None:
    client = world.client
    listing = {"workflow_id": world.workflow, "limit": 500}

    async def all_runs() -> list[str]:
        found = await client.get("/runs", params=listing, headers=world.bearer("admin"))
        return [run["id"] for run in found.json()]

    before = len(await all_runs())
    for name in ("Bo", "Cy"):
        await client.post(
            "/submit",
            json={"template_id": "t", "data": {"name": name}},
            headers=world.bearer("submit"),
        )

    async def two_more() -> list[str] | None:
        ids = await all_runs()
        return ids if len(ids) == before + 2 else None

    ids = await eventually(two_more, timeout=30, what="two more runs")
    await sign_in(client, world.keys["admin"]["key"])
    seen: list[str] = []
    url: str | None = f"/console/runs?workflow_id={world.workflow}&limit=2"
    while url:
        page = await client.get(url)
        assert page.status_code == 200
        seen += re.findall(r'href="/console/runs/([0-9a-f-]{36})"', page.text)
        found = re.search(r'href="(/console/runs\?[^"]+)" rel="next"', page.text)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert seen == ids and len(ids) >= 3


async def test_workflows_pages_show_versions_and_the_definition(world: World) -> None:
    client = world.client
    admin = {"Authorization": f"Bearer {world.keys['admin']['key']}"}
    changed = {**approval(), "name": "Approval v2"}
    assert (
        await client.put(f"/workflows/{world.workflow}", json=changed, headers=admin)
    ).status_code == 200
    await sign_in(client, world.keys["admin"]["key"])
    listed = await client.get("/console/workflows")
    assert listed.status_code == 200 and "Approval v2" in listed.text
    page = await client.get(f"/console/workflows/{world.workflow}")
    assert "Version 1" in page.text and "Version 2" in page.text
    assert "&#34;initial_step_id&#34;: &#34;review&#34;" in page.text
    first = await client.get(f"/console/workflows/{world.workflow}", params={"version": 1})
    assert "Definition of version 1" in first.text
    missing = await client.get(f"/console/workflows/{world.workflow}", params={"version": 9})
    assert missing.status_code == 404 and "no version 9" in missing.text


async def test_the_numbers_page_shows_what_metrics_exposes(world: World) -> None:
    client = world.client
    await sign_in(client, world.keys["tasks"]["key"])
    page = await client.get("/console/metrics")
    assert page.status_code == 200
    for shown in (
        "Outbox backlog",
        "Dead letters",
        "Runs (waiting)",
        'data-refresh="/console/metrics/table"',
    ):
        assert shown in page.text, shown
    table = await client.get("/console/metrics/table")
    assert table.status_code == 200 and "<html" not in table.text and "flowline_runs" in table.text


async def test_dead_letters_are_shown_to_the_operator_and_replayed(world: World) -> None:
    settings = world.service.settings
    keys = StreamKeys.from_settings(settings)
    redis = aioredis.Redis(host=settings.redis_host, port=settings.redis_port)
    event = events.form_submitted(new_id(), new_id(), "t", ORG, {}, datetime.now(UTC))
    await redis.xadd(
        keys.dead, {**event.to_fields(), "error": "boom: no route", "deliveries": "5"}, id="7-1"
    )
    try:
        client = world.client
        await sign_in(client, world.keys["admin"]["key"])
        refused = await client.get("/console/dead-letters")
        assert refused.status_code == 403 and "only the operator" in refused.text
        await sign_in(client, ADMIN, who="ops")
        page = await client.get("/console/dead-letters")
        assert page.status_code == 200 and "boom: no route" in page.text and "7-1" in page.text
        replayed = await client.post(
            "/console/dead-letters/7-1/replay", data={"csrf": csrf_of(page)}, headers=ORIGIN
        )
        assert replayed.status_code == 303
        after = await client.get(replayed.headers["location"])
        assert "Dead letter <code>7-1</code> replayed." in after.text
        assert "<dt>Replays</dt><dd>1</dd>" in after.text
    finally:
        await redis.delete(keys.dead, keys.replays)
        await redis.aclose()


async def test_an_open_api_has_an_open_console(settings: Settings) -> None:
    async with in_process_api(settings) as api:
        page = await api.client.get("/console/runs")
        assert page.status_code == 200 and "it is open, and so is this console" in page.text
        assert (await api.client.get("/console/sign-in")).headers["location"] == "/console/runs"
