"""The HTTP surface of CONTRACT §3 against a real API process: every kind of bad input gets
its 4xx with a message, never a 500; unknown ids are 404."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from tests.conftest import Stack
from tests.support.examples import EXAMPLE_FORM, EXAMPLE_WORKFLOW, email_step, example_workflow
from workflow_core import events
from workflow_core.adapters.streams import StreamKeys
from workflow_core.ids import new_id
from workflow_core.version import version


@pytest.fixture
async def client(shared_api: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=shared_api.base_url, timeout=10) as client:
        yield client


EXAMPLE_FORM_JSON = orjson.dumps(EXAMPLE_FORM).decode()


def _paths(response: httpx.Response) -> list[str]:
    return [problem["path"] for problem in response.json()["detail"]]


async def test_submit_accepts_the_example_form(client: httpx.AsyncClient) -> None:
    response = await client.post("/submit", json=EXAMPLE_FORM)
    assert response.status_code == 202
    body = response.json()
    assert uuid.UUID(body["submission_id"]) and uuid.UUID(body["event_id"])
    stored = (await client.get(f"/submissions/{body['submission_id']}")).json()
    assert stored["data"] == EXAMPLE_FORM["data"]
    assert stored["org_id"] == "org_123" and stored["template_id"] == "form_submitted"
    assert stored["runs"] == []


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"data": {}, "org_id": "o"}, "template_id"),
        ({"template_id": "t", "org_id": "o"}, "data"),
        ({"template_id": "t", "data": {}}, "org_id"),
        ({"template_id": 7, "data": {}, "org_id": "o"}, "template_id"),
        ({"template_id": "t", "data": [1, 2], "org_id": "o"}, "data"),
        ({"template_id": "t", "data": "text", "org_id": "o"}, "data"),
        ({"template_id": "t", "data": {}, "org_id": None}, "org_id"),
        ({"template_id": "", "data": {}, "org_id": "o"}, "template_id"),
        ({"template_id": "t", "data": {"x": "a\u0000b"}, "org_id": "o"}, "data"),
        ({"template_id": "t", "data": {"x": 2**70}, "org_id": "o"}, "data"),
        ([1, 2, 3], "body"),
        ("just a string", "body"),
    ],
)
async def test_submit_rejects_wrong_shapes_with_422(
    client: httpx.AsyncClient, body: Any, path: str
) -> None:
    response = await client.post("/submit", json=body)
    assert response.status_code == 422, response.text
    assert path in _paths(response)
    assert all(problem["msg"] for problem in response.json()["detail"])


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"template_id": "t", "data": {"x": NaN}, "org_id": "o"}',
        b'{"template_id": "t", "org_id": "o", "data": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
        b'{"template_id": "t", "org_id": "o", "data": {"a": ' + b"9" * 5000 + b"}}",
        b"",
        b'{"template_id": "\xff\xfe", "org_id": "o", "data": {}}',
    ],
    ids=["broken", "nan", "too-deep", "huge-number", "empty", "not-utf8"],
)
async def test_submit_rejects_unreadable_json_with_422(
    client: httpx.AsyncClient, raw: bytes
) -> None:
    response = await client.post(
        "/submit", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert all(problem["msg"] for problem in response.json()["detail"])


async def test_a_body_that_is_not_json_is_described_as_such(client: httpx.AsyncClient) -> None:
    broken = await client.post(
        "/submit", content=b'{"template_id": "x", ', headers={"content-type": "application/json"}
    )
    not_utf8 = await client.post(
        "/submit",
        content=b'{"template_id": "\xff\xfe", "org_id": "o", "data": {}}',
        headers={"content-type": "application/json"},
    )

    [problem] = broken.json()["detail"]
    assert (problem["path"], problem["loc"]) == ("body", ["body"])
    assert problem["msg"] == (
        "the body is not valid JSON: Expecting property name enclosed in double quotes "
        "at character 21"
    )
    [problem] = not_utf8.json()["detail"]
    assert "not UTF-8" in problem["msg"]


async def test_body_over_the_limit_is_413_declared_or_streamed(client: httpx.AsyncClient) -> None:
    big = b'{"template_id": "t", "org_id": "o", "data": {"a": "' + b"x" * (1024 * 1024) + b'"}}'
    declared = await client.post(
        "/submit", content=big, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413
    assert "larger than 1048576 bytes" in declared.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    streamed = await client.post(
        "/submit", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    just_under = b'{"template_id": "t", "org_id": "o", "data": {"a": "' + b"x" * 1_000_000 + b'"}}'
    accepted = await client.post(
        "/submit", content=just_under, headers={"content-type": "application/json"}
    )
    assert accepted.status_code == 202


async def test_unknown_ids_are_404_and_malformed_ids_422(client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    for path in (
        f"/workflows/{missing}",
        f"/submissions/{missing}",
        f"/runs/{missing}",
        f"/workflows/{missing}/versions/1",
        f"/workflows/{missing}/versions",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert str(missing) in response.json()["detail"]
    for path in ("/workflows/nope", "/submissions/123", "/runs/not-a-uuid"):
        assert (await client.get(path)).status_code == 422, path


async def test_workflow_round_trip(client: httpx.AsyncClient) -> None:
    created = await client.post("/workflows", json=EXAMPLE_WORKFLOW)
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == EXAMPLE_WORKFLOW["name"] and body["version"] == 1
    assert body["active"] is True and body["org_id"] is None and body["warnings"] == []
    fetched = (await client.get(f"/workflows/{body['id']}")).json()
    assert fetched["definition"] == EXAMPLE_WORKFLOW["definition"]
    scoped = await client.post("/workflows", json={**example_workflow(), "org_id": "org_9"})
    assert scoped.json()["org_id"] == "org_9"
    listed = {w["id"] for w in (await client.get("/workflows")).json()}
    assert {body["id"], scoped.json()["id"]} <= listed
    changed = {**EXAMPLE_WORKFLOW["definition"], "initial_step_id": "step1"}
    put = await client.put(f"/workflows/{body['id']}", json={"definition": changed, "name": "v2"})
    assert put.status_code == 200 and put.json()["version"] == 2
    versions = (await client.get(f"/workflows/{body['id']}/versions")).json()
    assert [(v["version"], v["name"]) for v in versions] == [
        (1, EXAMPLE_WORKFLOW["name"]),
        (2, "v2"),
    ]


def _definition(**changes: Any) -> dict[str, Any]:
    definition = example_workflow()["definition"]
    definition.update(changes)
    return definition


def _step(step_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "name": step_id,
        "type": "auto_action",
        "actions": [],
        "transitions": [],
        **changes,
    }


@pytest.mark.parametrize(
    ("definition", "path"),
    [
        (_definition(initial_step_id="nope"), "initial_step_id"),
        ({k: v for k, v in _definition().items() if k != "initial_step_id"}, "initial_step_id"),
        (_definition(steps=[]), "steps"),
        (
            _definition(steps=[_step("step1", transitions=[{"to": "ghost"}])]),
            "steps[0].transitions[0].to",
        ),
        (
            _definition(steps=[_step("step1", transitions=[{"to": "b"}]), _step("b"), _step("b")]),
            "steps[2].id",
        ),
        (
            _definition(steps=[_step("step1", actions=[{"type": "send_fax", "config": {}}])]),
            "steps[0].actions[0].type",
        ),
        (
            _definition(
                steps=[
                    _step(
                        "step1",
                        actions=[{"type": "send_email", "config": {"to": "a@b.c", "colour": 1}}],
                    )
                ]
            ),
            "steps[0].actions[0].config.colour",
        ),
        (
            _definition(
                trigger={
                    "type": "form_submitted",
                    "conditions": {"path": "x", "op": "equals", "value": 1},
                }
            ),
            "trigger.conditions.op",
        ),
        (_definition(steps=[_step("step1", type="teleport")]), "steps[0].type"),
        (_definition(trigger="form_submitted"), "trigger"),
        (
            {**_definition(), "concurrency": {"key": "{data.email}", "limit": 0}},
            "concurrency.limit",
        ),
        ({**_definition(), "throttle": {"key": "k", "limit": 1, "per": "often"}}, "throttle.per"),
    ],
    ids=[
        "initial-unknown",
        "initial-missing",
        "no-steps",
        "transition-target",
        "duplicate-id",
        "action-type",
        "config-field",
        "operator",
        "step-type",
        "trigger-shape",
        "concurrency-limit",
        "throttle-per",
    ],
)
async def test_invalid_definitions_are_422_naming_the_path(
    client: httpx.AsyncClient, definition: dict[str, Any], path: str
) -> None:
    response = await client.post("/workflows", json={"name": "bad", "definition": definition})
    assert response.status_code == 422, response.text
    assert path in _paths(response), response.text


async def test_a_workflow_key_is_unique_in_its_organisation(client: httpx.AsyncClient) -> None:
    key = f"nightly-{uuid.uuid4().hex[:8]}"
    mine = await client.post("/workflows", json={**example_workflow(), "org_id": "o1", "key": key})
    assert mine.status_code == 201 and mine.json()["key"] == key
    again = await client.post("/workflows", json={**example_workflow(), "org_id": "o1", "key": key})
    assert again.status_code == 409 and key in again.text
    other = await client.post("/workflows", json={**example_workflow(), "org_id": "o2", "key": key})
    assert other.status_code == 201
    for bad in ("has space", "", "-dash-first", "x" * 101):
        refused = await client.post("/workflows", json={**example_workflow(), "key": bad})
        assert refused.status_code == 422, bad
    assert (await client.post("/workflows", json=example_workflow())).json()["key"] is None


async def test_workflow_needs_a_name_and_an_object_definition(client: httpx.AsyncClient) -> None:
    no_name = await client.post("/workflows", json={"definition": _definition()})
    assert no_name.status_code == 422 and "name" in _paths(no_name)
    not_object = await client.post("/workflows", json={"name": "x", "definition": [1]})
    assert not_object.status_code == 422 and "definition" in _paths(not_object)


async def test_health_ready_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "version": version()}
    assert [(await client.head(path)).status_code for path in ("/healthz", "/readyz")] == [200, 200]
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
    spec = (await client.get("/openapi.json")).json()
    assert {
        "/submit",
        "/workflows",
        "/workflows/{workflow_id}",
        "/submissions/{submission_id}",
        "/runs/{run_id}",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])
    submit = spec["paths"]["/submit"]["post"]["responses"]
    assert {"202", "413", "422", "503"} <= set(submit)
    assert "413" not in spec["paths"]["/runs/{run_id}"]["get"]["responses"]


async def test_a_dry_run_of_a_saved_workflow_renders_without_sending(
    client: httpx.AsyncClient,
) -> None:
    created = (
        await client.post("/workflows", json={**EXAMPLE_WORKFLOW, "org_id": "org_dry"})
    ).json()
    report = await client.post(
        f"/workflows/{created['id']}/test", json={"form": {**EXAMPLE_FORM, "org_id": "org_dry"}}
    )
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["matched"] and body["status"] == "completed" and body["version"] == 1
    assert body["steps"][0]["actions"][0]["would"]["subject"] == (
        "Form Submission Confirmation - form_submitted"
    )
    elsewhere = (
        await client.post(f"/workflows/{created['id']}/test", json={"form": EXAMPLE_FORM})
    ).json()
    assert not elsewhere["matched"] and "org_dry" in elsewhere["trigger"]
    missing = await client.post(f"/workflows/{uuid.uuid4()}/test", json={"form": EXAMPLE_FORM})
    assert missing.status_code == 404
    bad = await client.post(f"/workflows/{created['id']}/test", json={"form": {"data": {}}})
    assert bad.status_code == 422
    neither = await client.post(f"/workflows/{created['id']}/test", json={})
    assert neither.status_code == 422 and "sample `form`" in neither.text, neither.text
    both = await client.post(
        f"/workflows/{created['id']}/test",
        json={"form": EXAMPLE_FORM, "event": {"type": "order.paid", "data": {}}},
    )
    assert both.status_code == 422 and "not both" in both.text, both.text


async def test_a_workflow_triggered_by_an_event_is_dry_run_with_a_sample_event(
    client: httpx.AsyncClient,
) -> None:
    """POST /workflows/{id}/test and /workflows/validate take a sample `event` (as POST /events
    takes it) for a workflow whose trigger is not a form."""
    definition = {
        "trigger": {"type": "order.paid"},
        "initial_step_id": "thank",
        "steps": [email_step("thank", "Paid", body="x")],
    }
    created = (
        await client.post(
            "/workflows", json={"name": "paid", "definition": definition, "org_id": "org_ev"}
        )
    ).json()
    sample = {"type": "order.paid", "data": {"email": "ada@example.com"}, "org_id": "org_ev"}
    report = await client.post(f"/workflows/{created['id']}/test", json={"event": sample})
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["matched"] and body["status"] == "completed", body
    assert body["steps"][0]["actions"][0]["would"]["to"] == ["ada@example.com"]
    checked = await client.post(
        "/workflows/validate",
        json={"definition": definition, "org_id": "org_ev", "event": sample},
    )
    assert checked.status_code == 200, checked.text
    assert checked.json()["dry_run"]["matched"] is True
    bad_type = await client.post(
        f"/workflows/{created['id']}/test", json={"event": {**sample, "type": "run.resume"}}
    )
    assert bad_type.status_code == 422, bad_type.text


async def test_validate_answers_errors_warnings_and_a_dry_run(client: httpx.AsyncClient) -> None:
    broken = _definition(steps=[_step("step1", transitions=[{"to": "ghost"}])])
    answer = (await client.post("/workflows/validate", json={"definition": broken})).json()
    assert answer["valid"] is False
    assert [e["path"] for e in answer["errors"]] == ["steps[0].transitions[0].to"]

    warned = example_workflow()["definition"]
    warned["steps"][0]["actions"][0]["config"]["subject"] = "Hi {fist_name}"
    answer = (
        await client.post("/workflows/validate", json={"definition": warned, "form": EXAMPLE_FORM})
    ).json()
    assert answer["valid"] is True and answer["errors"] == []
    assert answer["warnings"][0]["path"] == "steps[0].actions[0].config.subject"
    assert answer["dry_run"]["steps"][0]["actions"][0]["would"]["subject"] == "Hi {fist_name}"


@pytest.mark.parametrize("setting", ["API_ADMIN_KEY", "API_TOKEN"])
async def test_with_an_operators_key_every_request_but_the_probes_needs_a_key(
    stack: Stack, setting: str
) -> None:
    """API_TOKEN is the old name of API_ADMIN_KEY, still read."""
    token = f"token-{uuid.uuid4().hex}"
    stack.start_api(**{setting: token})
    granted = {"Authorization": f"bearer {token}"}  # the scheme's case does not matter
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        refused = await client.post("/submit", json=EXAMPLE_FORM)
        wrong = await client.get("/workflows", headers={"Authorization": f"Bearer {token}x"})
        oversized = await client.post("/submit", content=b"x" * (2 * 1024 * 1024))
        probes = [(await client.get(path)).status_code for path in ("/healthz", "/readyz")]
        description = await client.get("/openapi.json")
        accepted = await client.post("/submit", json=EXAMPLE_FORM, headers=granted)
        listed = await client.get("/workflows", headers=granted)

    assert refused.status_code == 401, refused.text
    assert "Authorization: Bearer <key>" in refused.json()["detail"]
    assert refused.headers["www-authenticate"] == "Bearer"
    assert (wrong.status_code, oversized.status_code) == (401, 401)
    assert probes == [200, 200] and description.status_code == 200
    assert (accepted.status_code, listed.status_code) == (202, 200)


async def test_values_the_database_cannot_hold_are_4xx_never_500(
    client: httpx.AsyncClient,
) -> None:
    """Lone surrogates, NUL characters, numbers past PostgreSQL's or Redis's integer range:
    each is refused with a message (and the keep-alive connection stays usable)."""
    created = (await client.post("/workflows", json=EXAMPLE_WORKFLOW)).json()
    workflow = f"/workflows/{created['id']}"
    step = '{"id": "s", "name": "\\udc00", "type": "auto_action", "actions": []}'
    definition = (
        '{"trigger": {"type": "form_submitted"}, "initial_step_id": "s", "steps": [' + step + "]}"
    )
    form = '{"template_id": "t", "org_id": "o", "data": {"item": "\\ud800"}}'
    big = "99999999999999999999999"
    requests: list[tuple[str, str, str | None]] = [
        ("POST", "/submit", form),
        ("POST", "/submit", '{"template_id": "t", "org_id": "o", "data": {"\\ud800": 1}}'),
        ("POST", "/workflows", '{"name": "n", "definition": ' + definition + "}"),
        ("PUT", workflow, '{"definition": ' + definition + "}"),
        ("POST", f"{workflow}/test", '{"form": ' + form + "}"),
        (
            "POST",
            f"{workflow}/test",
            '{"form": ' + EXAMPLE_FORM_JSON + ', "version": 2199023255552}',
        ),
        ("POST", "/workflows", '{"name": "n", "org_id": "a\\u0000b", "definition": {}}'),
        ("GET", "/workflows?org_id=%00", None),
        ("GET", "/tasks?assignee=%00", None),
        ("GET", "/tasks?org_id=%00", None),
        ("GET", "/tickets?org_id=%00", None),
        *(
            ("GET", f"/{listing}?offset={big}", None)
            for listing in ("workflows", "runs", "tasks", "tickets")
        ),
        ("GET", f"/dead-letters/{big}-0", None),
        ("POST", f"/dead-letters/{big}-0/replay", None),
        ("GET", f"/dead-letters?before={big}-0", None),
    ]
    for method, path, body in requests:
        response = await client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (method, path, body, response.text)
        assert response.json()["detail"], (method, path)

    beyond = await client.get(f"{workflow}/versions/2147483648")
    assert beyond.status_code == 404 and "no version 2147483648" in beyond.json()["detail"]
    assert (await client.get(workflow)).json()["version"] == 1  # the refused PUT changed nothing


async def test_dead_letter_ids_at_the_edges_and_with_leading_zeros(
    client: httpx.AsyncClient, shared_api: Stack
) -> None:
    """`before=0-0` is the first page's end, not Redis's refusal of the range `(0-0` (a 500);
    `007-01` names entry `7-1`: the same dead letter, and the same replay counter."""
    settings = shared_api.settings
    keys = StreamKeys.from_settings(settings)
    redis = aioredis.Redis(
        host=settings.redis_host, port=settings.redis_port, password=settings.redis_password or None
    )
    event = events.form_submitted(new_id(), new_id(), "t", "org_dead", {}, datetime.now(UTC))
    try:
        await redis.xadd(keys.dead, {**event.to_fields(), "error": "boom"}, id="7-1")
        for before in ("0-0", "00-000"):
            page = await client.get("/dead-letters", params={"before": before})
            assert (page.status_code, page.json()) == (200, []), before
        last = f"{2**64 - 1}-{2**64 - 1}"
        assert [d["id"] for d in (await client.get(f"/dead-letters?before={last}")).json()] == [
            "7-1"
        ]
        assert (await client.get("/dead-letters?before=7-1")).json() == []
        assert [d["id"] for d in (await client.get("/dead-letters?before=0007-02")).json()] == [
            "7-1"
        ]
        assert (await client.get("/dead-letters/0-0")).status_code == 404
        aliased = await client.get("/dead-letters/0007-01")
        assert (aliased.status_code, aliased.json()["id"]) == (200, "7-1")
        first = await client.post("/dead-letters/0007-1/replay")
        second = await client.post("/dead-letters/7-01/replay")
        assert (first.status_code, second.status_code) == (202, 202), second.text
        assert (first.json()["replays"], second.json()["replays"]) == (1, 2)
        assert first.json()["dead_letter_id"] == "7-1"
    finally:
        await redis.delete(keys.dead, keys.replays)
        await redis.aclose()
