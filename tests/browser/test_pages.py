"""The pages in headless Chromium: a plain HTML form on another origin posts to the form
endpoint and lands on its `_redirect` (or on the thank-you page); an assignee opens the task's
page from a caught email, decides by keyboard, and the run goes on to its next email. The API
(uvicorn) and the worker run in this process; the form's site is a tiny http.server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import Page, expect
from sqlalchemy import select

from services.api.app import create_app
from services.api.deps import Database
from tests.browser.conftest import Shoot
from tests.conftest import SettingsFactory
from tests.support.examples import unique_email
from tests.support.flows import running_worker
from tests.support.net import free_port
from tests.support.pages import approval_flow, links_of, make_key, org, text_of
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually
from workflow_core.persistence import sql
from workflow_core.persistence.tables import submissions
from workflow_core.settings import Settings

NARROW = {"width": 360, "height": 740}


@dataclass
class Api:
    url: str
    client: httpx.AsyncClient
    settings: Settings
    database: Database


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Api]:
    """The API on a real port, served by uvicorn in this process."""
    app = create_app(settings, migrated=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.api_port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or task.done(), what="uvicorn to start")
    assert not task.done(), "the API did not start"
    try:
        async with httpx.AsyncClient(base_url=settings.base_url, timeout=15) as client:
            yield Api(settings.base_url, client, settings, app.state.database)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def api(make_settings: SettingsFactory) -> AsyncIterator[Api]:
    port = free_port()
    settings = make_settings(api_port=port, public_base_url=f"http://127.0.0.1:{port}")
    async with serving(settings) as api:
        yield api


def form_page(action: str, redirect: str | None) -> str:
    """A web site's own contact form, as a user of Flowline writes it (see the README)."""
    hidden = f'<input type="hidden" name="_redirect" value="{redirect}">' if redirect else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Contact us</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<form method="post" action="{action}">
  <label>Name <input name="name" required></label>
  <label>Email <input type="email" name="email" required></label>
  <label><input type="checkbox" name="topics" value="sales"> Sales</label>
  <label><input type="checkbox" name="topics" value="support"> Support</label>
  <label>Message <textarea name="message"></textarea></label>
  {hidden}
  <input type="text" name="_gotcha" style="display:none" tabindex="-1" autocomplete="off">
  <button type="submit">Send</button>
</form>
</body></html>"""


@contextlib.contextmanager
def site(pages: dict[str, str]) -> Iterator[str]:
    """Another origin: a tiny web server with `pages` (path -> HTML)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path.split("?")[0], "not found").encode()
            self.send_response(200 if self.path.split("?")[0] in pages else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def fill_the_form(page: Page, name: str) -> None:
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Email").fill("ada@example.com")
    await page.get_by_label("Sales").check()
    await page.get_by_label("Support").check()
    await page.get_by_label("Message").fill("Hello from another site")
    await page.get_by_role("button", name="Send").click()


async def test_a_plain_form_on_another_origin_lands_on_its_redirect_or_the_thank_you_page(
    api: Api, page: Page, shoot: Shoot
) -> None:
    owner = org()
    pages: dict[str, str] = {"/thanks": "<!doctype html><h1>Thanks from our site</h1>"}
    with site(pages) as origin:
        key = await make_key(api.client, owner, "submit", allowed_origins=[origin])
        action = f"{api.url}/f/{key}/contact"
        pages["/"] = form_page(action, redirect=f"{origin}/thanks")
        pages["/plain"] = form_page(action, redirect=None)
        await page.goto(f"{origin}/")
        await fill_the_form(page, "Ada")
        await page.wait_for_url(f"{origin}/thanks")
        await expect(page.get_by_role("heading")).to_have_text("Thanks from our site")
        await shoot(page, "redirected")
        await page.set_viewport_size(NARROW)
        await page.goto(f"{origin}/plain")
        await fill_the_form(page, "Grace")
        await page.wait_for_url(action)
        await expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
        assert await page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        await shoot(page, "thank-you", docs=True)
    stored = await _forms(api, owner)
    assert sorted(form["name"] for form in stored) == ["Ada", "Grace"]
    for form in stored:
        assert form["topics"] == ["sales", "support"]
        assert "_gotcha" not in form and "_redirect" not in form


async def _forms(api: Api, org_id: str) -> list[dict[str, Any]]:
    query = select(submissions.c.data).where(submissions.c.org_id == org_id)
    async with api.database.reading() as conn:
        return [dict(row["data"]) for row in await sql.fetch(conn, query)]


async def test_an_approval_from_the_email_by_keyboard_and_the_run_goes_on(
    api: Api, page: Page, shoot: Shoot, smtp: SmtpServer
) -> None:
    assignee, requester, owner = unique_email(), unique_email(), org()
    made = await api.client.post(
        "/workflows", json={**approval_flow(assignee, "purchase"), "org_id": owner}
    )
    assert made.status_code == 201, made.text
    key = await make_key(api.client, owner, "submit")
    async with running_worker(api.settings):
        form = {"email": requester, "name": "Ada", "item": "a laptop", "amount": "1200"}
        posted = await api.client.post(f"/f/{key}/purchase", data=form)
        assert posted.status_code == 200
        [email] = await eventually(lambda: smtp.to(assignee), what="the assignee's email")
        links = links_of(email)
        await page.set_viewport_size({"width": 720, "height": 720})
        await page.goto(links["Open the task"])
        await expect(page.get_by_role("heading")).to_have_text("Buy a laptop for Ada?")
        await expect(page.get_by_role("button", name="Approved")).to_be_visible()
        await shoot(page, "task-page", docs=True)
        await page.goto(links["Approved"])  # opening it changed nothing: it asks first
        await shoot(page, "confirm")
        await page.get_by_label("Comment").focus()
        await page.keyboard.type("Go ahead, Ada.")
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("button", name="Confirm: Approved")).to_be_focused()
        await page.keyboard.press("Enter")
        await expect(page.locator(".outcome")).to_have_text("approved")
        await expect(page.locator(".who")).to_contain_text(f"{assignee} (via email link)")
        await shoot(page, "decided")
        [told] = await eventually(lambda: smtp.to(requester), what="the run's next email")
        assert told.message["Subject"] == "Approved: a laptop"
        assert "Go ahead, Ada." in text_of(told.message)
        await page.set_viewport_size(NARROW)
        await page.goto(links["Rejected"])  # the second click: what was decided
        await expect(page.locator(".outcome")).to_have_text("approved")
        assert await page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        await shoot(page, "decided-narrow")
