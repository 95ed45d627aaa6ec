"""Another organisation sees nothing and changes nothing (CONTRACT §7), route by route.

Organisation A has a workflow (with a webhook secret), a form, the run it started, the ticket
and the task that run opened. Organisation B's keys (each scope) call EVERY operation of the
API's OpenAPI document with A's ids and A's organisation: each answer must be a refusal (403,
404) or a list without A's objects, no answer may carry anything of A's, and afterwards A's
objects are as they were. An operation that is not in the matrix below fails the test: a new
route must say how it keeps organisations apart.

The console's pages (/console, not in the OpenAPI document: HTML forms behind a session
cookie) have a matrix of their own, CONSOLE_MATRIX, called by B signed in to the console with
each of its keys that may sign in (`tasks`, `admin`), its forms posted with B's own CSRF
token: A's objects are 404 (or 403 for a scope that cannot see them), lists leave them out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from services.api.console import ROUTERS as CONSOLE_ROUTERS
from tests.conftest import Stack, module_stack
from tests.support.services import Servers
from tests.support.waiting import eventually
from workflow_core import task_links
from workflow_core.task_links import TaskLink

ADMIN = "fl_admin_" + uuid.uuid4().hex + uuid.uuid4().hex
TOKEN = uuid.uuid4().hex[:8]
ORG_A, ORG_B = f"org_a_{TOKEN}", f"org_b_{TOKEN}"
MARK = f"only-for-a-{TOKEN}"  # in A's form data: must never reach B
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class World:
    a_keys: dict[str, str]
    b_keys: dict[str, str]
    workflow: str
    shared_workflow: str
    submission: str
    run: str
    task: str
    ticket: str

    def secrets_of_a(self) -> list[str]:
        ids = [self.workflow, self.submission, self.run, self.task, self.ticket]
        return [ORG_A, MARK, SECRET, *ids, *self.a_keys.values()]


def _flow() -> dict[str, Any]:
    return {
        "name": f"A's approval {MARK}",
        "definition": {
            "trigger": {"type": "form_submitted"},
            "initial_step_id": "open",
            "steps": [
                {"id": "open", "type": "auto_action", "actions": [
                    {"type": "create_ticket", "config": {"subject": "{data.marker}"}}],
                 "transitions": [{"to": "review"}]},
                {"id": "review", "type": "human_task", "config": {"title": "{data.marker}"},
                 "transitions": [{"to": "call"}]},
                {"id": "call", "type": "auto_action", "actions": [
                    {"type": "webhook", "config": {
                        "url": "http://127.0.0.1:9/never", "secret": SECRET}}]},
            ],
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
async def stack(
    servers: Servers, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with module_stack(
        servers, template_database, tmp_path_factory.mktemp("logs"), api_admin_key=ADMIN
    ) as stack:
        stack.start_api()
        stack.start_worker("worker")
        yield stack


def _operator() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


async def _keys(client: httpx.AsyncClient, org_id: str) -> dict[str, str]:
    made = {}
    for scope in ("submit", "tasks", "admin"):
        answer = await client.post(
            "/api-keys", json={"org_id": org_id, "scopes": [scope]}, headers=_operator()
        )
        assert answer.status_code == 201, answer.text
        made[scope] = answer.json()["key"]
    return made


@pytest.fixture(scope="module")
async def world(stack: Stack) -> World:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        a_keys, b_keys = await _keys(client, ORG_A), await _keys(client, ORG_B)
        a_admin = {"Authorization": f"Bearer {a_keys['admin']}"}
        workflow = (await client.post("/workflows", json=_flow(), headers=a_admin)).json()
        shared = await client.post(
            "/workflows",
            json={**_flow(), "name": "every organisation's", "definition": {
                **_flow()["definition"], "trigger": {"type": "never_sent"}}},
            headers=_operator(),
        )  # fmt: skip
        submitted = await client.post(
            "/submit",
            json={"template_id": "t", "data": {"marker": MARK}},
            headers={"Authorization": f"Bearer {a_keys['submit']}"},
        )
        submission = submitted.json()["submission_id"]

        async def waiting_run() -> dict[str, Any] | None:
            found = (await client.get(f"/submissions/{submission}", headers=a_admin)).json()
            runs = [r for r in found["runs"] if r["status"] == "waiting"]
            return runs[0] if runs else None

        run = await eventually(waiting_run, timeout=30, what="A's run waiting for its task")
        [task] = (await client.get("/tasks", params={"run_id": run["id"]}, headers=a_admin)).json()
        [ticket] = (
            await client.get("/tickets", params={"run_id": run["id"]}, headers=a_admin)
        ).json()
    return World(
        a_keys, b_keys, workflow["id"], shared.json()["id"], submission, run["id"], task["id"],
        ticket["id"],
    )  # fmt: skip


Call = Callable[[httpx.AsyncClient, World, dict[str, str]], Awaitable[httpx.Response]]


def _form(org_id: str | None = ORG_A) -> dict[str, Any]:
    return {"template_id": "t", "data": {"x": 1}, **({"org_id": org_id} if org_id else {})}


# (method, path template) -> how B calls it against A, and what B may get back.
def _forged(world: World) -> str:
    """A link to A's task signed with a key that is not the API's."""
    link = TaskLink(uuid.UUID(world.task), "approved", datetime.now(UTC) + timedelta(days=1))
    return task_links.sign(b"not the deployment's TASK_LINK_SECRET", link)


MATRIX: dict[tuple[str, str], tuple[Call, set[int]]] = {
    ("POST", "/submit"): (
        lambda c, w, h: c.post("/submit", json=_form(), headers=h), {403}),
    ("POST", "/events"): (
        lambda c, w, h: c.post(
            "/events", json={"type": "order.paid", "data": {}, "org_id": ORG_A}, headers=h),
        {403}),
    ("GET", "/submissions/{submission_id}"): (
        lambda c, w, h: c.get(f"/submissions/{w.submission}", headers=h), {403, 404}),
    ("POST", "/workflows"): (
        lambda c, w, h: c.post("/workflows", json={**_flow(), "org_id": ORG_A}, headers=h),
        {403}),
    ("GET", "/workflows"): (
        lambda c, w, h: c.get("/workflows", params={"org_id": ORG_A}, headers=h), {403}),
    ("POST", "/workflows/validate"): (
        lambda c, w, h: c.post(
            "/workflows/validate",
            json={"definition": _flow()["definition"], "org_id": ORG_A}, headers=h),
        {403}),
    ("POST", "/workflows/{workflow_id}/test"): (
        lambda c, w, h: c.post(
            f"/workflows/{w.workflow}/test", json={"form": _form(None)}, headers=h),
        {403, 404}),
    ("GET", "/workflows/{workflow_id}"): (
        lambda c, w, h: c.get(f"/workflows/{w.workflow}", headers=h), {403, 404}),
    ("PUT", "/workflows/{workflow_id}"): (
        lambda c, w, h: c.put(
            f"/workflows/{w.workflow}", json={"definition": _flow()["definition"]}, headers=h),
        {403, 404}),
    ("DELETE", "/workflows/{workflow_id}"): (
        lambda c, w, h: c.delete(f"/workflows/{w.workflow}", headers=h), {403, 404}),
    ("POST", "/workflows/{workflow_id}/activate"): (
        lambda c, w, h: c.post(f"/workflows/{w.workflow}/activate", headers=h), {403, 404}),
    ("GET", "/workflows/{workflow_id}/versions"): (
        lambda c, w, h: c.get(f"/workflows/{w.workflow}/versions", headers=h), {403, 404}),
    ("GET", "/workflows/{workflow_id}/versions/{version}"): (
        lambda c, w, h: c.get(f"/workflows/{w.workflow}/versions/1", headers=h), {403, 404}),
    ("GET", "/runs/{run_id}"): (
        lambda c, w, h: c.get(f"/runs/{w.run}", headers=h), {403, 404}),
    ("POST", "/runs/{run_id}/retry"): (
        lambda c, w, h: c.post(f"/runs/{w.run}/retry", headers=h), {403, 404}),
    ("POST", "/runs/{run_id}/cancel"): (
        lambda c, w, h: c.post(f"/runs/{w.run}/cancel", json={"reason": "b"}, headers=h),
        {403, 404}),
    # B's own failed runs only (none); naming A's organisation is refused.
    ("POST", "/runs/retry"): (
        lambda c, w, h: c.post("/runs/retry", json={"org_id": ORG_A}, headers=h), {403}),
    ("GET", "/runs"): (
        lambda c, w, h: c.get("/runs", params={"submission_id": w.submission}, headers=h),
        {200, 403}),
    ("GET", "/tasks"): (
        lambda c, w, h: c.get("/tasks", params={"org_id": ORG_A}, headers=h), {403}),
    ("GET", "/tasks/{task_id}"): (
        lambda c, w, h: c.get(f"/tasks/{w.task}", headers=h), {403, 404}),
    ("POST", "/tasks/{task_id}/complete"): (
        lambda c, w, h: c.post(
            f"/tasks/{w.task}/complete", json={"outcome": "approved"}, headers=h),
        {403, 404}),
    ("GET", "/tickets"): (
        lambda c, w, h: c.get("/tickets", params={"org_id": ORG_A}, headers=h), {403}),
    ("GET", "/tickets/{ticket_id}"): (
        lambda c, w, h: c.get(f"/tickets/{w.ticket}", headers=h), {403, 404}),
    ("GET", "/dead-letters"): (
        lambda c, w, h: c.get("/dead-letters", headers=h), {403}),
    ("GET", "/dead-letters/{entry_id}"): (
        lambda c, w, h: c.get("/dead-letters/1-0", headers=h), {403}),
    ("POST", "/dead-letters/{entry_id}/replay"): (
        lambda c, w, h: c.post("/dead-letters/1-0/replay", headers=h), {403}),
    ("POST", "/api-keys"): (
        lambda c, w, h: c.post(
            "/api-keys", json={"org_id": ORG_A, "scopes": ["admin"]}, headers=h), {403}),
    ("GET", "/api-keys"): (
        lambda c, w, h: c.get("/api-keys", params={"org_id": ORG_A}, headers=h), {403}),
    ("DELETE", "/api-keys/{key_id}"): (
        lambda c, w, h: c.delete(f"/api-keys/{uuid.uuid4()}", headers=h), {403}),
    ("GET", "/healthz"): (lambda c, w, h: c.get("/healthz", headers=h), {200}),
    ("HEAD", "/healthz"): (lambda c, w, h: c.head("/healthz", headers=h), {200}),
    ("GET", "/readyz"): (lambda c, w, h: c.get("/readyz", headers=h), {200}),
    ("HEAD", "/readyz"): (lambda c, w, h: c.head("/readyz", headers=h), {200}),
    # Open by path token (CONTRACT §8): the form endpoint's key is in its path and gives the
    # organisation (B's own key would store B's form); the task pages' signed token names one
    # task, and B cannot sign one for A's.
    ("POST", "/f/{key}/{template_id}"): (
        lambda c, w, h: c.post(f"/f/fl_live_{'x' * 43}/contact", data={"org_id": ORG_A}),
        {401}),
    ("GET", "/t/{token}"): (lambda c, w, h: c.get(f"/t/{_forged(w)}", headers=h), {404}),
    ("POST", "/t/{token}"): (
        lambda c, w, h: c.post(f"/t/{_forged(w)}", data={"outcome": "x"}, headers=h), {404}),
    # Open (CONTRACT §10): totals of the whole deployment, no series per organisation.
    ("GET", "/metrics"): (lambda c, w, h: c.get("/metrics", headers=h), {200}),
}  # fmt: skip


@dataclass
class Console:
    """B signed in to the console: its client (with the session cookie) and a form token."""

    client: httpx.AsyncClient
    csrf: str

    def form(self, **fields: str) -> dict[str, str]:
        return {"csrf": self.csrf, **fields}


ConsoleCall = Callable[[Console, World], Awaitable[httpx.Response]]

# (method, path template) -> how B, signed in to the console, calls it against A, and what B
# may get back (303: a redirect within the console; 401: a sign-in with a key that is none).
CONSOLE_MATRIX: dict[tuple[str, str], tuple[ConsoleCall, set[int]]] = {
    ("GET", "/console"): (lambda b, w: b.client.get("/console"), {303}),
    ("GET", "/console/sign-in"): (lambda b, w: b.client.get("/console/sign-in"), {200}),
    ("POST", "/console/sign-in"): (
        lambda b, w: b.client.post("/console/sign-in", data={"key": w.a_keys["admin"][:12]}),
        {401}),
    ("POST", "/console/sign-out"): (
        lambda b, w: b.client.post("/console/sign-out", data={"csrf": "not B's"}), {403}),
    ("GET", "/console/assets/{name}"): (
        lambda b, w: b.client.get("/console/assets/console.css"), {200}),
    ("GET", "/console/runs"): (
        lambda b, w: b.client.get("/console/runs", params={"org_id": ORG_A}), {403}),
    ("GET", "/console/runs/{run_id}"): (
        lambda b, w: b.client.get(f"/console/runs/{w.run}"), {403, 404}),
    ("POST", "/console/runs/{run_id}/retry"): (
        lambda b, w: b.client.post(f"/console/runs/{w.run}/retry", data=b.form()), {403, 404}),
    ("POST", "/console/runs/{run_id}/cancel"): (
        lambda b, w: b.client.post(
            f"/console/runs/{w.run}/cancel", data=b.form(reason="by B")),
        {403, 404}),
    ("GET", "/console/inbox"): (lambda b, w: b.client.get("/console/inbox"), {200}),
    ("POST", "/console/tasks/{task_id}/complete"): (
        lambda b, w: b.client.post(
            f"/console/tasks/{w.task}/complete", data=b.form(outcome="approved")),
        {403, 404}),
    ("GET", "/console/workflows"): (lambda b, w: b.client.get("/console/workflows"), {200, 403}),
    ("GET", "/console/workflows/{workflow_id}"): (
        lambda b, w: b.client.get(f"/console/workflows/{w.workflow}"), {403, 404}),
    ("GET", "/console/dead-letters"): (lambda b, w: b.client.get("/console/dead-letters"), {403}),
    ("POST", "/console/dead-letters/{entry_id}/replay"): (
        lambda b, w: b.client.post("/console/dead-letters/1-0/replay", data=b.form()), {403}),
    # The deployment's totals, as /metrics shows them to anyone: no series per organisation.
    ("GET", "/console/metrics"): (lambda b, w: b.client.get("/console/metrics"), {200}),
    ("GET", "/console/metrics/table"): (
        lambda b, w: b.client.get("/console/metrics/table"), {200}),
}  # fmt: skip


def test_every_console_route_is_in_the_console_matrix() -> None:
    routes = {
        (method, route.path)
        for router in CONSOLE_ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert routes - CONSOLE_MATRIX.keys() == set(), (
        "new console routes: say how they keep orgs apart"
    )
    assert CONSOLE_MATRIX.keys() - routes == set(), "the console matrix names routes that are gone"


@pytest.mark.parametrize("scope", ["tasks", "admin"])
async def test_another_organisation_sees_and_changes_nothing_in_the_console(
    stack: Stack, world: World, scope: str
) -> None:
    origin = {"Origin": stack.base_url}
    leaks: list[str] = []
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10, headers=origin) as client:
        signed = await client.post("/console/sign-in", data={"key": world.b_keys[scope]})
        assert signed.status_code == 303, signed.text
        inbox = await client.get("/console/inbox")
        b = Console(client, inbox.text.split('name="csrf" value="', 1)[1].split('"', 1)[0])
        for (method, path), (call, allowed) in CONSOLE_MATRIX.items():
            answer = await call(b, world)
            if answer.status_code not in allowed:
                leaks.append(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
            sent = str(answer.request.url) + answer.request.content.decode(errors="replace")
            shown = [s for s in world.secrets_of_a() if s in answer.text and s not in sent]
            if shown:
                leaks.append(f"{method} {path}: shows {shown}")
        await _a_is_unchanged(client, world)
    assert not leaks, "\n".join(leaks)


async def _operations(client: httpx.AsyncClient) -> set[tuple[str, str]]:
    document = (await client.get("/openapi.json")).json()
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete", "head"}
    }


async def test_every_operation_is_in_the_matrix(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        described = await _operations(client)
    assert described - MATRIX.keys() == set(), "new routes: say how they keep orgs apart"
    assert MATRIX.keys() - described == set(), "the matrix names routes that are gone"


@pytest.mark.parametrize("scope", ["submit", "tasks", "admin"])
async def test_another_organisation_sees_and_changes_nothing(
    stack: Stack, world: World, scope: str
) -> None:
    headers = {"Authorization": f"Bearer {world.b_keys[scope]}"}
    leaks: list[str] = []
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        for (method, path), (call, allowed) in MATRIX.items():
            answer = await call(client, world, headers)
            if answer.status_code not in allowed:
                leaks.append(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
            # What B sent (A's id in a path, A's org in a query) may be echoed in a refusal.
            sent = str(answer.request.url) + answer.request.content.decode(errors="replace")
            shown = [s for s in world.secrets_of_a() if s in answer.text and s not in sent]
            if shown:
                leaks.append(f"{method} {path}: shows {shown}")
        await _a_is_unchanged(client, world)
    assert not leaks, "\n".join(leaks)


async def test_lists_show_another_organisation_nothing(stack: Stack, world: World) -> None:
    headers = {"Authorization": f"Bearer {world.b_keys['admin']}"}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        for path in ("/workflows", "/runs", "/tasks", "/tickets"):
            answer = await client.get(path, headers=headers)
            assert answer.status_code == 200, path
            assert not [s for s in world.secrets_of_a() if s in answer.text], path
        shared = (await client.get("/workflows", headers=headers)).json()
        assert [w["id"] for w in shared] == [world.shared_workflow]  # every organisation's
        tasks = await client.get(
            "/tasks", headers={"Authorization": f"Bearer {world.b_keys['tasks']}"}
        )
        assert tasks.json() == []


async def _a_is_unchanged(client: httpx.AsyncClient, world: World) -> None:
    a_admin = {"Authorization": f"Bearer {world.a_keys['admin']}"}
    workflow = (await client.get(f"/workflows/{world.workflow}", headers=a_admin)).json()
    assert (workflow["active"], workflow["version"]) == (True, 1)
    task = (await client.get(f"/tasks/{world.task}", headers=a_admin)).json()
    assert task["status"] == "pending"
    run = (await client.get(f"/runs/{world.run}", headers=a_admin)).json()
    assert run["status"] == "waiting"
    keys = (await client.get("/api-keys", params={"org_id": ORG_A}, headers=_operator())).json()
    assert len(keys) == 3 and all(k["revoked_at"] is None for k in keys)
