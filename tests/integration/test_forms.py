"""The plain form endpoint and CORS (CONTRACT §8) against the API in this process, on real
PostgreSQL and Redis: url-encoded, multipart and JSON forms, repeated names, `_redirect`,
the honeypot, the answers by `Accept`, preflights, and the origins a key refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import SettingsFactory
from tests.support.inprocess import InProcessApi, in_process_api
from tests.support.pages import make_key, org
from workflow_core.persistence import sql
from workflow_core.persistence.tables import submissions

SHOP = "http://shop.test"
ELSEWHERE = "http://evil.test"


@pytest.fixture
async def api(make_settings: SettingsFactory) -> AsyncIterator[InProcessApi]:
    settings = make_settings(cors_allow_origins=f"{SHOP}, http://other.test")
    async with in_process_api(settings) as api:
        yield api


@pytest.fixture
async def site(api: InProcessApi) -> tuple[str, str]:
    """An organisation and its key for the shop's web pages."""
    owner = org()
    return owner, await make_key(api.client, owner, "submit", allowed_origins=[SHOP])


async def stored(api: InProcessApi, org_id: str) -> list[dict[str, Any]]:
    query = select(submissions).where(submissions.c.org_id == org_id)
    async with api.database.reading() as conn:
        return [dict(row) for row in await sql.fetch(conn, query)]


async def test_a_url_encoded_form_is_stored_and_thanked(
    api: InProcessApi, site: tuple[str, str]
) -> None:
    owner, key = site
    answer = await api.client.post(
        f"/f/{key}/contact",
        content="name=Ada&topic=a&topic=b&_ignored=x&note=caf%C3%A9",
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "text/html"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert "Thank you" in answer.text
    [form] = await stored(api, owner)
    assert form["template_id"] == "contact"
    assert form["data"] == {"name": "Ada", "topic": ["a", "b"], "note": "café"}


async def test_multipart_fields_are_stored_and_a_file_is_a_422_naming_it(
    api: InProcessApi, site: tuple[str, str]
) -> None:
    owner, key = site
    fields = await api.client.post(f"/f/{key}/signup", files={"name": (None, "Ada")})
    assert fields.status_code == 200, fields.text
    with_file = await api.client.post(
        f"/f/{key}/signup",
        data={"name": "Bob"},
        files={"cv": ("cv.pdf", b"%PDF-1.4", "application/pdf")},
    )
    assert with_file.status_code == 422
    [problem] = with_file.json()["detail"]
    assert problem["path"] == "cv" and "file" in problem["msg"] and "cv.pdf" in problem["msg"]
    assert [form["data"] for form in await stored(api, owner)] == [{"name": "Ada"}]


async def test_json_gets_the_page_or_a_202_when_only_json_is_accepted(
    api: InProcessApi, site: tuple[str, str]
) -> None:
    owner, key = site
    page = await api.client.post(f"/f/{key}/contact", json={"name": "Ada", "n": 2})
    assert page.status_code == 200 and "Thank you" in page.text
    answer = await api.client.post(
        f"/f/{key}/contact",
        json={"name": "Bob", "_redirect": "https://nowhere.test/"},
        headers={"accept": "application/json", "idempotency-key": "form-1"},
    )
    assert answer.status_code == 202, answer.text
    again = await api.client.post(
        f"/f/{key}/contact",
        json={"name": "Bob"},
        headers={"accept": "application/json", "idempotency-key": "form-1"},
    )
    assert again.json()["submission_id"] == answer.json()["submission_id"]
    forms = {str(form["id"]): form["data"] for form in await stored(api, owner)}
    assert forms[answer.json()["submission_id"]] == {"name": "Bob"}
    assert sorted(forms.values(), key=str) == [{"name": "Ada", "n": 2}, {"name": "Bob"}]
    not_an_object = await api.client.post(f"/f/{key}/contact", json=["a"])
    assert not_an_object.status_code == 422


async def test_redirect_only_to_the_keys_own_origins(
    api: InProcessApi, site: tuple[str, str]
) -> None:
    _, key = site
    allowed = await api.client.post(
        f"/f/{key}/contact", data={"name": "Ada", "_redirect": f"{SHOP}/thanks?x=1"}
    )
    assert allowed.status_code == 303
    assert allowed.headers["location"] == f"{SHOP}/thanks?x=1"
    refused = await api.client.post(
        f"/f/{key}/contact", data={"name": "Ada", "_redirect": f"{ELSEWHERE}/thanks"}
    )
    assert refused.status_code == 200 and "Thank you" in refused.text
    assert "location" not in refused.headers


async def test_the_honeypot_gets_the_same_answer_and_nothing_is_stored(
    api: InProcessApi, site: tuple[str, str]
) -> None:
    owner, key = site
    page = await api.client.post(f"/f/{key}/contact", data={"name": "Bot", "_gotcha": "x"})
    assert page.status_code == 200 and "Thank you" in page.text
    redirected = await api.client.post(
        f"/f/{key}/contact", data={"_gotcha": "x", "_redirect": f"{SHOP}/thanks"}
    )
    assert (redirected.status_code, redirected.headers["location"]) == (303, f"{SHOP}/thanks")
    as_json = await api.client.post(
        f"/f/{key}/contact", json={"_gotcha": "x"}, headers={"accept": "application/json"}
    )
    assert as_json.status_code == 202 and as_json.json()["submission_id"]
    assert "idempotent-replayed" not in as_json.headers
    empty = await api.client.post(f"/f/{key}/contact", data={"name": "Ada", "_gotcha": ""})
    assert empty.status_code == 200
    assert [form["data"] for form in await stored(api, owner)] == [{"name": "Ada"}]


async def test_a_preflight_from_an_allowed_origin_is_204_with_the_headers(
    api: InProcessApi,
) -> None:
    preflight = await api.client.options(
        "/submit",
        headers={
            "origin": SHOP,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, idempotency-key",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == SHOP
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key"} <= allowed
    assert "POST" in preflight.headers["access-control-allow-methods"]
    stranger = await api.client.options(
        "/submit", headers={"origin": ELSEWHERE, "access-control-request-method": "POST"}
    )
    assert "access-control-allow-origin" not in stranger.headers


async def test_answers_to_an_allowed_origin_carry_cors_headers(
    api: InProcessApi, site: tuple[str, str]
) -> None:
    _, key = site
    answer = await api.client.post(
        f"/f/{key}/contact",
        data={"name": "Ada"},
        headers={"origin": SHOP, "accept": "application/json"},
    )
    assert answer.status_code == 202
    assert answer.headers["access-control-allow-origin"] == SHOP
    assert "Origin" in answer.headers["vary"]
    other = await api.client.get("/healthz", headers={"origin": ELSEWHERE})
    assert "access-control-allow-origin" not in other.headers


async def test_keys_are_checked(api: InProcessApi, site: tuple[str, str]) -> None:
    owner, key = site
    refused_origin = await api.client.post(
        f"/f/{key}/contact", data={"name": "Ada"}, headers={"origin": "http://other.test"}
    )
    assert refused_origin.status_code == 403
    assert "http://other.test" in refused_origin.json()["detail"]
    unknown = await api.client.post("/f/fl_live_" + "x" * 43 + "/contact", data={"a": "b"})
    assert unknown.status_code == 401
    tasks_key = await make_key(api.client, owner, "tasks")
    no_scope = await api.client.post(f"/f/{tasks_key}/contact", data={"a": "b"})
    assert no_scope.status_code == 403 and "submit" in no_scope.json()["detail"]
    bad_body = await api.client.post(
        f"/f/{key}/contact", content=b"hello", headers={"content-type": "text/plain"}
    )
    assert bad_body.status_code == 422
    nul = await api.client.post(f"/f/{key}/contact", json={"a": "x\u0000y"})
    assert nul.status_code == 422
    assert await stored(api, owner) == []


async def test_a_browser_is_shown_its_refusal_as_a_page(
    api: InProcessApi, site: tuple[str, str]
) -> None:
    _, key = site
    browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    refused = await api.client.post(
        f"/f/{key}/contact", data={"a": "b"}, headers={**browser, "origin": "http://other.test"}
    )
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/html")
    assert "http://other.test" in refused.text
    with_file = await api.client.post(
        f"/f/{key}/contact", files={"cv": ("cv.pdf", b"%PDF", "application/pdf")}, headers=browser
    )
    assert with_file.status_code == 422 and "cv.pdf" in with_file.text
    unknown = await api.client.post("/f/fl_live_nobody/contact", data={"a": "b"}, headers=browser)
    assert unknown.status_code == 401 and "unknown key" in unknown.text


async def test_a_page_can_read_a_refusal(api: InProcessApi) -> None:
    """A 401 carries the CORS headers too, so a page's script can tell the user why."""
    answer = await api.client.post(
        "/f/fl_live_unknown/contact", data={"a": "b"}, headers={"origin": SHOP}
    )
    assert answer.status_code == 401
    assert answer.headers["access-control-allow-origin"] == SHOP
