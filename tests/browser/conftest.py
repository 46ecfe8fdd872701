"""Browser tests: Debian's headless Chromium driven by Playwright, against in-process nodes
that serve the pages (`create_app` serves them).

Every test module here runs in the session's event loop (`pytestmark` in each module), so the
session-scoped browser, the servers and the Python clients share one loop. The browser talks to
127.0.0.1 only: other hosts do not resolve, and any request elsewhere fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Route,
    async_playwright,
    expect,
)

from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.app import create_app
from orbridge.signaling.node import NODE, Node
from orbridge.signaling.settings import Settings
from tests.conftest import LiveNode
from tests.support import ROOT, SECRET, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-device-for-media-stream=fps=30",  # the fake camera defaults to 20 fps
    "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--allow-loopback-in-peer-connection",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--no-default-browser-check",
    # Only loopback resolves: nothing in these tests may reach another host.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
TIMEOUT_MS = 10_000  # every Playwright action and expectation is bounded by this
# A page's load (every subresource through the loopback-only route handler) on a busy 2-core
# machine with several consoles open: a bound, not a speed check (benchmarks measure speed).
NAVIGATION_TIMEOUT_MS = 30_000
ARTIFACTS = ROOT / "test-artifacts"
LOOPBACK = {"127.0.0.1", "localhost"}

expect.set_options(timeout=TIMEOUT_MS)


# servers -------------------------------------------------------------------------------------
class WebNode(LiveNode):
    """An in-process orbridge node serving the browser pages too."""

    def __init__(self, node: Node, url: str, port: int, runner: web.AppRunner) -> None:
        super().__init__(node, url)
        self.port = port
        self.runner = runner
        self.stopped = False

    def join_url(self, room: str, token: str) -> str:
        return tokens.join_url(self.url, room, token)

    def room_url(self, room: str, role: Role | str, name: str = "Tester",
                 identity: str | None = None, **kw: Any) -> str:  # fmt: skip
        """A fresh token's join link, as `orbridge token` prints it."""
        return self.join_url(room, self.token(room, role, name, identity, **kw))

    async def stop(self) -> None:
        """Stop cleanly (participants get server_shutdown), as SIGTERM does."""
        if self.stopped:
            return
        self.stopped = True
        for client in self.clients:
            await client.close()
        await asyncio.wait_for(self.runner.cleanup(), 15)


StartWebNode = Callable[..., Awaitable[WebNode]]


@pytest_asyncio.fixture(loop_scope="session")
async def start_web_node(tmp_path: Path) -> AsyncIterator[StartWebNode]:
    """Start nodes with the pages on free loopback ports (or a given `port`)."""
    started: list[WebNode] = []

    async def start(**overrides: Any) -> WebNode:
        port = int(overrides.pop("port", 0)) or free_port()
        values: dict[str, Any] = {
            "port": port, "secret": SECRET, "data_dir": tmp_path,
            "presence_ttl": 3.0, "heartbeat_interval": 0.5,
        }  # fmt: skip
        values.update(overrides)
        app = create_app(Settings(**values))
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        started.append(WebNode(app[NODE], f"http://127.0.0.1:{port}", port, runner))
        return started[-1]

    yield start
    for live in reversed(started):
        await live.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def web_node(start_web_node: StartWebNode) -> WebNode:
    return await start_web_node()


# browser -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium. Missing, it fails the browser tests (never skips them)."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(apt-get install chromium, or run scripts/test.sh, which installs it). "
            "Playwright's own browser downloads are never used.",
            pytrace=False,
        )
    return CHROMIUM


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


class Pages:
    """Browser pages for one test, each in its own context (its own user and storage)."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.page_errors: list[str] = []  # uncaught exceptions: always a failure
        self.console_errors: list[str] = []  # console.error and failed loads (CSP included)
        self.foreign_requests: list[str] = []  # anything not to 127.0.0.1

    async def new_context(self) -> BrowserContext:
        context = await self.browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
        await context.route("**/*", self._only_loopback)
        self.contexts.append(context)
        return context

    async def new_page(self, url: str | None = None, context: BrowserContext | None = None) -> Page:
        """A page in a new context (a new user), or in `context`; opens `url` if given."""
        context = context or await self.new_context()
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.page_errors.append(f"{page.url}: {exc}"))
        page.on("console", lambda msg: self._console(page, msg))
        if url is not None:
            await page.goto(url)
        return page

    def _console(self, page: Page, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.console_errors.append(f"{page.url}: {msg.text}")

    async def _only_loopback(self, route: Route, request: Request) -> None:
        host = urlsplit(request.url).hostname or ""
        if request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            await route.continue_()
        else:
            self.foreign_requests.append(request.url)
            await route.abort()

    async def close(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(Exception):
                await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def pages(browser: Browser) -> AsyncIterator[Pages]:
    """A factory of pages (`await pages.new_page(url)`); checks them when the test ends."""
    opened = Pages(browser)
    yield opened
    await opened.close()
    assert not opened.page_errors, f"uncaught errors in the page: {opened.page_errors}"
    assert not opened.foreign_requests, f"requests off loopback: {opened.foreign_requests}"


@pytest_asyncio.fixture(loop_scope="session")
async def context(pages: Pages) -> BrowserContext:
    return await pages.new_context()


@pytest_asyncio.fixture(loop_scope="session")
async def page(pages: Pages, context: BrowserContext) -> Page:
    return await pages.new_page(context=context)


@pytest.fixture
def artifacts() -> Path:
    """test-artifacts/ at the repository root (gitignored): screenshots."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
