"""Approvals from the email, with the API and the worker in this process on real PostgreSQL,
Redis and SMTP: the assignee's email carries signed links; opening one changes nothing; its
button decides once (the run goes on, the comment in `task.data.comment`); a second click
shows the decision; altered, foreign and expired links are refused; outcomes are enforced."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import SettingsFactory
from tests.support.examples import unique_email
from tests.support.flows import running_worker
from tests.support.inprocess import InProcessApi, in_process_api
from tests.support.pages import approval_flow, html_of, links_of, make_key, org, text_of
from tests.support.smtp import Received, SmtpServer
from tests.support.waiting import eventually
from workflow_core import task_links
from workflow_core.settings import Settings
from workflow_core.task_links import TaskLink

BASE = "http://flowline.test"  # the in-process client's address


@dataclass
class Waiting:
    """A run waiting for its assignee, and the assignee's email."""

    api: InProcessApi
    settings: Settings
    smtp: SmtpServer
    requester: str
    email: Received
    links: dict[str, str]

    async def task(self) -> dict[str, Any]:
        [task] = (await self.api.client.get("/tasks", params={"kind": "human"})).json()
        return dict(task)


@pytest.fixture
async def waiting(make_settings: SettingsFactory, smtp: SmtpServer) -> AsyncIterator[Waiting]:
    settings = make_settings(public_base_url=BASE)
    assignee, requester, owner = unique_email(), unique_email(), org()
    async with in_process_api(settings) as api, running_worker(settings):
        made = await api.client.post(
            "/workflows", json={**approval_flow(assignee, "purchase"), "org_id": owner}
        )
        assert made.status_code == 201, made.text
        key = await make_key(api.client, owner, "submit")
        form = {"email": requester, "name": "Ada", "item": "a <b>laptop</b>", "amount": "1200"}
        posted = await api.client.post(f"/f/{key}/purchase", data=form)
        assert posted.status_code == 200, posted.text
        [email] = await eventually(lambda: smtp.to(assignee), what="the assignee's email")
        yield Waiting(api, settings, smtp, requester, email, links_of(email))


def path(url: str) -> str:
    assert url.startswith(BASE + "/t/"), url
    return url.removeprefix(BASE)


async def test_the_email_carries_a_link_per_outcome_and_one_to_the_page(waiting: Waiting) -> None:
    assert set(waiting.links) == {"Approved", "Rejected", "Open the task"}
    text = text_of(waiting.email.message)
    assert "item: a <b>laptop</b>" in text and "amount: 1200" in text
    html = html_of(waiting.email.message)
    assert "a &lt;b&gt;laptop&lt;/b&gt;" in html and "<b>laptop" not in html
    for url in waiting.links.values():
        assert url.replace("&", "&amp;") in html or url in html


async def test_opening_a_link_changes_nothing_and_its_button_decides_once(
    waiting: Waiting,
) -> None:
    client, approve = waiting.api.client, path(waiting.links["Approved"])
    for _ in range(2):  # a mail scanner, then the person
        shown = await client.get(approve)
        assert shown.status_code == 200
        assert "Confirm: Approved" in shown.text and "a &lt;b&gt;laptop" in shown.text
        assert shown.headers["referrer-policy"] == "same-origin"
    assert (await waiting.task())["status"] == "pending"
    decided = await client.post(approve, data={"comment": "Go ahead <now>"})
    assert decided.status_code == 303
    assert decided.headers["location"] == approve.removeprefix("/t/")  # relative: the page
    task = await waiting.task()
    assert (task["status"], task["outcome"]) == ("completed", "approved")
    assert task["data"] == {"comment": "Go ahead <now>"}
    assert task["completed_by"].endswith("(via email link)")
    assert task["completed_by"].startswith(task_assignee(waiting))
    [told] = await eventually(lambda: waiting.smtp.to(waiting.requester), what="the next email")
    assert told.message["Subject"] == "Approved: a <b>laptop</b>"
    assert "Go ahead <now>" in text_of(told.message)
    # The second click, on any of the links: what was decided, by whom and when.
    for url in waiting.links.values():
        again = await client.get(path(url))
        assert again.status_code == 200
        assert "approved" in again.text and "(via email link)" in again.text
        assert "Go ahead &lt;now&gt;" in again.text and "<button" not in again.text
    twice = await client.post(path(waiting.links["Rejected"]), data={})
    assert twice.status_code == 409 and "approved" in twice.text
    assert (await waiting.task())["outcome"] == "approved"


def task_assignee(waiting: Waiting) -> str:
    return str(waiting.email.rcpt_tos[0])


async def test_the_tasks_page_offers_every_outcome_and_takes_only_those(waiting: Waiting) -> None:
    client, page = waiting.api.client, path(waiting.links["Open the task"])
    shown = await client.get(page)
    assert shown.status_code == 200
    assert 'value="approved"' in shown.text and 'value="rejected"' in shown.text
    wrong = await client.post(page, data={"outcome": "maybe"})
    assert wrong.status_code == 422 and "maybe" in wrong.text
    via_api = await client.post(
        f"/tasks/{(await waiting.task())['id']}/complete", json={"outcome": "perhaps"}
    )
    assert via_api.status_code == 422 and "approved" in via_api.text
    not_this = await client.post(path(waiting.links["Approved"]), data={"outcome": "rejected"})
    assert not_this.status_code == 422
    assert (await waiting.task())["status"] == "pending"
    decided = await client.post(page, data={"outcome": "rejected"})
    assert decided.status_code == 303
    [told] = await eventually(lambda: waiting.smtp.to(waiting.requester), what="the next email")
    assert told.message["Subject"].startswith("Rejected")


async def test_altered_foreign_and_expired_links_are_refused(waiting: Waiting) -> None:
    client, approve = waiting.api.client, path(waiting.links["Approved"])
    payload, _, signature = approve.rpartition(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    task = await waiting.task()
    key = waiting.settings.task_link_key
    soon = datetime.now(UTC) + timedelta(hours=1)
    past = datetime.now(UTC) - timedelta(seconds=1)
    cases = {
        f"{payload}.{flipped}": 404,  # a changed signature
        approve.replace("YXBwcm92ZWQ", "cmVqZWN0ZWQ"): 404,  # approved -> rejected, unsigned
        "/t/" + task_links.sign(b"another key" * 3, TaskLink(uuid.UUID(task["id"]), None, soon)):
        404,
        "/t/" + task_links.sign(key, TaskLink(uuid.uuid4(), None, soon)): 404,  # no such task
        "/t/not-a-token": 404,
        "/t/" + task_links.sign(key, TaskLink(uuid.UUID(task["id"]), "approved", past)): 410,
    }  # fmt: skip
    for url, status in cases.items():
        assert (await client.get(url)).status_code == status, url
        assert (await client.post(url, data={})).status_code == status, url
    assert (await waiting.task())["status"] == "pending"


async def test_a_post_from_another_site_is_refused(waiting: Waiting) -> None:
    client, approve = waiting.api.client, path(waiting.links["Approved"])
    refused = await client.post(approve, data={}, headers={"origin": "http://evil.test"})
    assert refused.status_code == 403
    assert (await waiting.task())["status"] == "pending"
    same = await client.post(approve, data={}, headers={"origin": BASE})
    assert same.status_code == 303


ADMIN = "fl_admin_" + "l" * 40


async def test_without_a_link_secret_beside_an_operators_key_no_link_is_made_or_taken(
    make_settings: SettingsFactory, smtp: SmtpServer
) -> None:
    """A deployment with API_ADMIN_KEY but no TASK_LINK_SECRET: a guessable key would let
    anyone decide any task, so the assignee's email carries no link, and a link signed with
    the development key (derived from DATABASE_URL, which an attacker may know) is refused."""
    settings = make_settings(public_base_url=BASE, api_admin_key=ADMIN, task_link_secret="")
    assert settings.task_link_key is None
    operator = {"Authorization": f"Bearer {ADMIN}"}
    assignee, owner = unique_email(), org()
    async with in_process_api(settings) as api, running_worker(settings):
        flow = {**approval_flow(assignee, "purchase"), "org_id": owner}
        made = await api.client.post("/workflows", json=flow, headers=operator)
        assert made.status_code == 201, made.text
        key = await make_key(api.client, owner, "submit", headers=operator)
        form = {"email": unique_email(), "name": "Ada", "item": "a laptop", "amount": "1200"}
        assert (await api.client.post(f"/f/{key}/purchase", data=form)).status_code == 200
        [email] = await eventually(lambda: smtp.to(assignee), what="the assignee's email")
        assert "/t/" not in text_of(email.message) and "/t/" not in html_of(email.message)
        assert "POST /tasks/" in text_of(email.message)

        tasks = await api.client.get("/tasks", params={"kind": "human"}, headers=operator)
        [task] = [t for t in tasks.json() if t["run_id"] and t["status"] == "pending"]
        guessable = settings.model_copy(update={"api_admin_key": ""}).task_link_key
        assert guessable is not None
        soon = datetime.now(UTC) + timedelta(hours=1)
        forged = "/t/" + task_links.sign(
            guessable, TaskLink(uuid.UUID(task["id"]), "approved", soon)
        )
        assert (await api.client.get(forged)).status_code == 404
        assert (await api.client.post(forged, data={})).status_code == 404
        again = await api.client.get(f"/tasks/{task['id']}", headers=operator)
        assert again.json()["status"] == "pending"
