"""Fixtures of the browser tests: one headless Chromium per run, a fresh context per test,
and `shoot(page, name)` to keep a screenshot of a page under the run's artifacts
(`test-artifacts/<run>/`). With `FLOWLINE_UPDATE_SCREENSHOTS=1`, the screenshots a test names
for the documentation are also written to docs/screenshots/."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.support.browser import DOCS_SCREENSHOTS, chromium_path, run_directory, screenshot_name

Shoot = Callable[..., Awaitable[Path]]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    if path is None:
        pytest.fail(
            "the browser tests need Chromium: `apt-get install chromium` (Debian), or set "
            "FLOWLINE_CHROMIUM to a Chromium binary"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=path,
            # --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    opened = await context.new_page()
    yield opened
    await context.close()


@pytest.fixture
def shoot(request: pytest.FixtureRequest) -> Shoot:
    """`await shoot(page, "inbox", docs=True)`: a full-page screenshot in this run's artifacts
    (and in docs/screenshots/<name>.png when asked for and FLOWLINE_UPDATE_SCREENSHOTS=1)."""

    async def take(page: Page, name: str, *, docs: bool = False) -> Path:
        path = run_directory() / screenshot_name(request.node.name, name)
        await page.screenshot(path=str(path), full_page=True)
        if docs and os.environ.get("FLOWLINE_UPDATE_SCREENSHOTS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / f"{name}.png")
        return path

    return take
