"""The dry-run endpoints under the limits: a request of a few dozen KB that asks for hundreds of
MB of rendered text is refused with a 422 before the text is built, and the API's memory stays
flat (measured with tracemalloc around the request, the API running in this process)."""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import orjson

from tests.support.examples import EXAMPLE_FORM
from tests.support.inprocess import in_process_api
from workflow_core.settings import Settings

MiB = 1024 * 1024


def email(body: str) -> dict[str, Any]:
    return {"type": "send_email", "config": {"to": "a@example.com", "subject": "s", "body": body}}


def definition(*steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "trigger": {"type": "form_submitted"},
        "initial_step_id": "s0",
        "steps": [
            {
                "id": f"s{i}",
                "type": "auto_action",
                "actions": actions,
                "transitions": [{"to": f"s{i + 1}"}] if i + 1 < len(steps) else [],
            }
            for i, actions in enumerate(steps)
        ],
    }


def bomb() -> dict[str, Any]:
    """58 KB that asks for about 170 MB: a 14 KB value referred to 4,000 times in one body
    (56 MB), then that body again in the next step, and both again in the answer's context."""
    return {
        "definition": definition([email("{data.blob}" * 4000)], [email("{steps.s0.actions}" * 2)]),
        "form": {**EXAMPLE_FORM, "data": {"blob": "b" * 14_000}},
    }


async def test_a_58_kb_validate_request_that_asks_for_170_mb_is_a_422_with_memory_flat(
    settings: Settings,
) -> None:
    request = orjson.dumps(bomb())
    assert 55_000 < len(request) < 60_000
    async with in_process_api(settings) as api:
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            answer = await api.client.post(
                "/workflows/validate",
                content=request,
                headers={"content-type": "application/json"},
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert answer.status_code == 422, answer.text[:500]
    [problem] = answer.json()["detail"]
    assert problem["type"] == "too_large"
    assert problem["path"] == "steps[0].actions[0]"
    assert "MAX_RENDERED_BYTES (262144 bytes)" in problem["msg"]
    assert peak - before < 50 * MiB, f"peak {(peak - before) / MiB:.1f} MiB above the start"


async def test_an_answer_of_many_fields_each_within_the_limit_is_a_422_past_its_own(
    settings: Settings,
) -> None:
    many = definition([email("{data.blob}" * 20) for _ in range(100)])  # 100 x 200 KB
    async with in_process_api(settings) as api:
        answer = await api.client.post(
            "/workflows/validate",
            json={"definition": many, "form": {**EXAMPLE_FORM, "data": {"blob": "c" * 10_000}}},
        )
    assert answer.status_code == 422, answer.text[:500]
    [problem] = answer.json()["detail"]
    assert problem["type"] == "too_large" and "MAX_DRY_RUN_BYTES" in problem["msg"]
    assert problem["loc"][:4] == ["body", "definition", "steps", 0]


async def test_the_test_endpoint_refuses_the_same_and_saves_nothing_else(
    settings: Settings,
) -> None:
    async with in_process_api(settings) as api:
        created = await api.client.post(
            "/workflows", json={"name": "bomb", "definition": bomb()["definition"]}
        )
        assert created.status_code == 201, created.text
        tested = await api.client.post(
            f"/workflows/{created.json()['id']}/test", json={"form": bomb()["form"]}
        )
        assert tested.status_code == 422, tested.text[:500]
        assert tested.json()["detail"][0]["path"] == "steps[0].actions[0]"
        small = await api.client.post(
            f"/workflows/{created.json()['id']}/test",
            json={"form": {**EXAMPLE_FORM, "data": {"blob": "ok"}}},
        )
    assert small.status_code == 200, small.text[:500]


async def test_a_dry_run_says_an_email_would_go_past_the_recipient_limit(
    settings: Settings,
) -> None:
    step = {"type": "send_email", "config": {"to_path": "data.all", "subject": "s", "body": "b"}}
    form = {**EXAMPLE_FORM, "data": {"all": [f"p{i}@example.com" for i in range(51)]}}
    async with in_process_api(settings) as api:
        answer = await api.client.post(
            "/workflows/validate", json={"definition": definition([step]), "form": form}
        )
    assert answer.status_code == 200, answer.text
    dry = answer.json()["dry_run"]
    assert dry["status"] == "failed"
    assert "MAX_RECIPIENTS_PER_EMAIL allows 50" in dry["error"]
    assert "MAX_RECIPIENTS_PER_EMAIL" in dry["steps"][0]["actions"][0]["error"]


async def test_an_organisation_past_its_workflows_gets_409_and_others_do_not(
    make_settings: Any,
) -> None:
    settings: Settings = make_settings(max_workflows_per_org=3)
    example = {"name": "w", "definition": definition([email("hi")])}
    async with in_process_api(settings) as api:
        # Concurrent creations cannot overtake the count: exactly three of five get in.
        answers = await asyncio.gather(
            *(api.client.post("/workflows", json={**example, "org_id": "org_a"}) for _ in range(5))
        )
        assert sorted(a.status_code for a in answers) == [201, 201, 201, 409, 409]
        refused = next(a for a in answers if a.status_code == 409).json()["detail"]
        assert "organisation 'org_a'" in refused and "MAX_WORKFLOWS_PER_ORG (3)" in refused
        other = await api.client.post("/workflows", json={**example, "org_id": "org_b"})
        assert other.status_code == 201
        unowned = [await api.client.post("/workflows", json=example) for _ in range(4)]
        assert [a.status_code for a in unowned] == [201, 201, 201, 409]

        first = next(a for a in answers if a.status_code == 201).json()["id"]
        assert (await api.client.delete(f"/workflows/{first}")).status_code == 204
        again = await api.client.post("/workflows", json={**example, "org_id": "org_a"})
        assert again.status_code == 201, again.text
