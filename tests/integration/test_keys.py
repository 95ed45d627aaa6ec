"""Keys and organisations (CONTRACT §7) against real API processes: the operator's key and the
organisations' keys, their scopes, 401 and 403, revocation reaching a second API process,
write-only secrets, the keys CLI, and an open API that refuses to face the network.

The isolation matrix itself is in test_isolation.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Stack, module_stack, settings_env
from tests.support.examples import EXAMPLE_FORM, EXAMPLE_WORKFLOW
from tests.support.net import free_port
from tests.support.processes import ROOT, start, wait_http
from tests.support.services import Servers
from tests.support.waiting import eventually
from workflow_core.persistence.tables import api_keys, workflow_versions

ADMIN = "fl_admin_" + uuid.uuid4().hex + uuid.uuid4().hex


def operator() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
async def keyed(
    servers: Servers, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with module_stack(
        servers, template_database, tmp_path_factory.mktemp("logs"), api_admin_key=ADMIN
    ) as stack:
        stack.start_api()
        yield stack


@pytest.fixture
async def client(keyed: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=keyed.base_url, timeout=10) as client:
        yield client


async def make_key(client: httpx.AsyncClient, org_id: str, *scopes: str, **extra: Any) -> str:
    made = await client.post(
        "/api-keys", json={"org_id": org_id, "scopes": list(scopes), **extra}, headers=operator()
    )
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    assert key.startswith("fl_live_") and len(key) >= 50
    return key


def org() -> str:
    return f"org_{uuid.uuid4().hex[:8]}"


async def test_no_key_or_an_unknown_one_is_401_and_the_probes_need_none(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.get("/workflows")
    unknown = await client.get("/workflows", headers=bearer("fl_live_" + "x" * 43))
    garbage = await client.get("/workflows", headers={"Authorization": "Basic abc"})
    assert (missing.status_code, unknown.status_code, garbage.status_code) == (401, 401, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


async def test_each_scope_opens_its_own_doors_only(client: httpx.AsyncClient) -> None:
    mine = org()
    submit_key = await make_key(client, mine, "submit")
    tasks_key = await make_key(client, mine, "tasks")
    admin_key = await make_key(client, mine, "admin")
    form = {**EXAMPLE_FORM, "org_id": mine}

    assert (await client.post("/submit", json=form, headers=bearer(submit_key))).status_code == 202
    for key in (submit_key, tasks_key):
        refused = await client.get("/workflows", headers=bearer(key))
        assert refused.status_code == 403 and "`admin` scope" in refused.json()["detail"]
    assert (await client.get("/tasks", headers=bearer(submit_key))).status_code == 403
    assert (await client.get("/tasks", headers=bearer(tasks_key))).status_code == 200
    assert (await client.post("/submit", json=form, headers=bearer(tasks_key))).status_code == 403
    for path in ("/workflows", "/tasks", "/runs", "/tickets"):
        assert (await client.get(path, headers=bearer(admin_key))).status_code == 200, path
    assert (await client.post("/submit", json=form, headers=bearer(admin_key))).status_code == 202
    # Only the operator manages keys and reads dead letters.
    for path in ("/api-keys", "/dead-letters"):
        assert (await client.get(path, headers=bearer(admin_key))).status_code == 403, path
        assert (await client.get(path, headers=operator())).status_code == 200, path


async def test_an_organisations_key_acts_for_its_own_organisation(
    client: httpx.AsyncClient,
) -> None:
    mine = org()
    key = await make_key(client, mine, "submit", "admin")
    implicit = await client.post(
        "/submit", json={"template_id": "t", "data": {"a": 1}}, headers=bearer(key)
    )
    assert implicit.status_code == 202
    stored = await client.get(
        f"/submissions/{implicit.json()['submission_id']}", headers=bearer(key)
    )
    assert stored.json()["org_id"] == mine
    other = await client.post(
        "/submit", json={**EXAMPLE_FORM, "org_id": "someone_else"}, headers=bearer(key)
    )
    assert other.status_code == 403 and mine in other.json()["detail"]
    workflow = await client.post("/workflows", json=EXAMPLE_WORKFLOW, headers=bearer(key))
    assert workflow.status_code == 201 and workflow.json()["org_id"] == mine
    everyone = await client.post(
        "/workflows", json={**EXAMPLE_WORKFLOW, "org_id": "someone_else"}, headers=bearer(key)
    )
    assert everyone.status_code == 403
    # The operator must name the organisation of a form.
    unnamed = await client.post(
        "/submit", json={"template_id": "t", "data": {}}, headers=operator()
    )
    assert unnamed.status_code == 422 and unnamed.json()["detail"][0]["path"] == "org_id"


async def test_a_submit_key_with_origins_is_refused_from_any_other(
    client: httpx.AsyncClient,
) -> None:
    mine = org()
    key = await make_key(client, mine, "submit", allowed_origins=["https://www.example.com"])
    form = {**EXAMPLE_FORM, "org_id": mine}

    async def sent_from(origin: str | None) -> int:
        headers = bearer(key) | ({"Origin": origin} if origin else {})
        return (await client.post("/submit", json=form, headers=headers)).status_code

    assert await sent_from("https://www.example.com") == 202
    assert await sent_from("https://evil.example") == 403
    assert await sent_from(None) == 202  # not from a page: the key is the proof


async def test_a_workflow_of_every_organisation_is_seen_by_all_and_changed_by_the_operator(
    client: httpx.AsyncClient,
) -> None:
    shared = await client.post("/workflows", json=EXAMPLE_WORKFLOW, headers=operator())
    assert shared.status_code == 201 and shared.json()["all_organisations"] is True
    key = await make_key(client, org(), "admin")
    workflow_id = shared.json()["id"]
    listed = [w["id"] for w in (await client.get("/workflows", headers=bearer(key))).json()]
    assert workflow_id in listed
    assert (await client.get(f"/workflows/{workflow_id}", headers=bearer(key))).status_code == 200
    changed = await client.put(
        f"/workflows/{workflow_id}",
        json={"definition": EXAMPLE_WORKFLOW["definition"]},
        headers=bearer(key),
    )
    removed = await client.delete(f"/workflows/{workflow_id}", headers=bearer(key))
    assert (changed.status_code, removed.status_code) == (403, 403)


async def test_a_deleted_workflow_comes_back_with_activate(client: httpx.AsyncClient) -> None:
    made = (await client.post("/workflows", json=EXAMPLE_WORKFLOW, headers=operator())).json()
    path = f"/workflows/{made['id']}"
    assert (await client.delete(path, headers=operator())).status_code == 204
    inactive = await client.get("/workflows", params={"active": "false"}, headers=operator())
    assert made["id"] in [w["id"] for w in inactive.json()]
    back = await client.post(f"{path}/activate", headers=operator())
    assert back.status_code == 200 and back.json()["active"] is True
    active = await client.get("/workflows", headers=operator())
    assert made["id"] in [w["id"] for w in active.json()]


def _with_secret(secret: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {"url": "http://127.0.0.1:9/hook"}
    if secret is not None:
        config["secret"] = secret
    return {
        "name": "signed",
        "definition": {
            "trigger": {"type": "form_submitted"},
            "initial_step_id": "call",
            "steps": [
                {"id": "call", "type": "auto_action", "actions": [
                    {"type": "webhook", "config": config}
                ]}
            ],
        },
    }  # fmt: skip


SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def _stored_secret(engine: AsyncEngine, workflow_id: str) -> Any:
    async with engine.connect() as conn:
        definition = (
            await conn.execute(
                select(workflow_versions.c.definition)
                .where(workflow_versions.c.workflow_id == uuid.UUID(workflow_id))
                .order_by(workflow_versions.c.version.desc())
                .limit(1)
            )
        ).scalar_one()
    return definition["steps"][0]["actions"][0]["config"].get("secret")


async def test_a_webhook_secret_is_write_only_and_kept_by_a_version_that_leaves_it_out(
    client: httpx.AsyncClient, keyed: Stack
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(keyed.settings.sqlalchemy_url)
    try:
        made = await client.post("/workflows", json=_with_secret(SECRET), headers=operator())
        assert made.status_code == 201
        answers = [made, await client.get(f"/workflows/{made.json()['id']}", headers=operator())]
        answers.append(await client.get("/workflows", headers=operator()))
        answers.append(
            await client.get(f"/workflows/{made.json()['id']}/versions/1", headers=operator())
        )
        for answer in answers:
            assert SECRET not in answer.text
        assert made.json()["secrets"] == ["steps[0].actions[0].config.secret"]

        path = f"/workflows/{made.json()['id']}"
        kept = await client.put(
            path, json={"definition": _with_secret(None)["definition"]}, headers=operator()
        )
        assert kept.status_code == 200 and SECRET not in kept.text
        assert await _stored_secret(engine, made.json()["id"]) == SECRET

        definition = _with_secret(None)["definition"]
        definition["steps"][0]["actions"][0]["config"]["secret"] = None
        removed = await client.put(path, json={"definition": definition}, headers=operator())
        assert removed.status_code == 200 and removed.json()["secrets"] == []
        assert await _stored_secret(engine, made.json()["id"]) is None
    finally:
        await engine.dispose()


async def test_a_revoked_key_is_refused_by_every_api_process_within_a_second(
    client: httpx.AsyncClient, keyed: Stack
) -> None:
    key = await make_key(client, org(), "admin")
    second_port = free_port()
    env = {**keyed.env(), "API_PORT": str(second_port)}
    second = start("services.api", env, keyed.log_dir, "second-api")
    try:
        wait_http(second, f"http://127.0.0.1:{second_port}/healthz")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{second_port}", timeout=10
        ) as other:
            assert (await other.get("/workflows", headers=bearer(key))).status_code == 200
            listed = (await client.get("/api-keys", headers=operator())).json()
            key_id = next(k["id"] for k in listed if key.startswith(k["prefix"]))
            assert key not in str(listed)  # a key's text is shown once, when made
            revoked_at = time.monotonic()
            gone = await client.delete(f"/api-keys/{key_id}", headers=operator())
            assert gone.status_code == 204
            assert (await client.get("/workflows", headers=bearer(key))).status_code == 401

            async def refused() -> bool:
                return (await other.get("/workflows", headers=bearer(key))).status_code == 401

            await eventually(refused, timeout=5, interval=0.05, what="the second API refusing")
            took = time.monotonic() - revoked_at
        print(f"\n[revocation] refused by the second API process after {took:.3f} s")
        assert took < 1.5
    finally:
        second.stop()


async def test_keys_are_stored_as_hashes_only(client: httpx.AsyncClient, keyed: Stack) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    key = await make_key(client, org(), "submit")
    engine = create_async_engine(keyed.settings.sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(api_keys))).mappings().all()
    finally:
        await engine.dispose()
    stored = repr([dict(row) for row in rows])
    assert rows and key not in stored and key[len("fl_live_") :] not in stored
    assert all(len(row["digest"]) == 32 for row in rows)


def _cli(stack: Stack, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.api", "keys", *arguments],
        cwd=ROOT,
        env={**settings_env(stack.settings), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_keys_command_makes_lists_and_revokes(
    client: httpx.AsyncClient, keyed: Stack
) -> None:
    mine = org()
    made = await asyncio.to_thread(_cli, keyed, "create", "--org", mine, "--scope", "submit")
    assert made.returncode == 0, made.stderr
    key = orjson.loads(made.stdout)["key"]
    form = {**EXAMPLE_FORM, "org_id": mine}
    assert (await client.post("/submit", json=form, headers=bearer(key))).status_code == 202
    listed = await asyncio.to_thread(_cli, keyed, "list", "--org", mine)
    [row] = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert row["org_id"] == mine and key not in listed.stdout
    revoked = await asyncio.to_thread(_cli, keyed, "revoke", row["id"])
    assert revoked.returncode == 0, revoked.stderr

    async def refused() -> bool:
        answer = await client.post("/submit", json=form, headers=bearer(key))
        return answer.status_code == 401

    await eventually(refused, timeout=5, what="the revoked key refused")


async def test_an_open_api_refuses_to_listen_beyond_loopback(keyed: Stack) -> None:
    env = {**keyed.env(), "API_ADMIN_KEY": "", "API_HOST": "0.0.0.0", "API_PORT": str(free_port())}
    env.pop("API_TOKEN", None)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.api"],
        cwd=ROOT,
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert "API_ADMIN_KEY" in line and "0.0.0.0" in line
