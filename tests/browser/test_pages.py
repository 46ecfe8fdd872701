"""The pages over plain HTTP: status codes, security headers, static files, vendored files."""

from __future__ import annotations

import re

import aiohttp
import pytest

from tests.browser.conftest import WebNode

pytestmark = pytest.mark.asyncio(loop_scope="session")

TIMEOUT = aiohttp.ClientTimeout(total=10)


async def get(url: str) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(url, allow_redirects=False) as response,
    ):
        return response.status, dict(response.headers), await response.text()


def assert_page_headers(headers: dict[str, str]) -> None:
    csp = headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
    assert directives["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["default-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"].startswith("text/html")


def assert_no_inline_script(html: str) -> None:
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts, "the page should load its modules"
    for tag in scripts:
        assert re.search(r'\bsrc="/static/', tag), f"inline script: {tag}"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"


async def test_landing_page(web_node: WebNode) -> None:
    status, headers, html = await get(web_node.url + "/")
    assert status == 200
    assert_page_headers(headers)
    assert 'href="/healthz"' in html
    assert "orbridge token --room" in html
    assert "teleconsultation" in html


async def test_room_page(web_node: WebNode) -> None:
    status, headers, html = await get(web_node.url + "/room/or-1")
    assert status == 200
    assert_page_headers(headers)
    assert_no_inline_script(html)
    assert 'data-room="or-1"' in html
    assert '<script type="module" src="/static/js/room.js"></script>' in html


@pytest.mark.parametrize(
    "room", ["-starts-with-dash", "has%20space", "x" * 65, "%3Cscript%3E", "caf%C3%A9"]
)
async def test_bad_room_name_is_a_400_page(web_node: WebNode, room: str) -> None:
    status, headers, html = await get(f"{web_node.url}/room/{room}")
    assert status == 400
    assert_page_headers(headers)
    assert "Not a room name" in html
    assert "<script>" not in html


async def test_static_files(web_node: WebNode) -> None:
    for path in (
        "/static/js/protocol.js",
        "/static/js/room.js",
        "/static/js/presence-view.js",
        "/static/vendor/socket.io-client/socket.io.esm.min.js",
    ):
        status, headers, body = await get(web_node.url + path)
        assert status == 200, path
        assert "javascript" in headers["Content-Type"], path
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert body
    status, headers, _ = await get(web_node.url + "/static/css/orbridge.css")
    assert status == 200
    assert headers["Content-Type"].startswith("text/css")
    # No listings, nothing outside static/.
    assert (await get(web_node.url + "/static/"))[0] in (403, 404)
    assert (await get(web_node.url + "/static/js/"))[0] in (403, 404)
    assert (await get(web_node.url + "/static/..%2Fsignaling%2Fapp.py"))[0] in (403, 404)
    assert (await get(web_node.url + "/static/../pyproject.toml"))[0] in (403, 404)


async def test_pages_leave_the_api_alone(web_node: WebNode) -> None:
    status, headers, _ = await get(web_node.url + "/healthz")
    assert status == 200
    assert "Content-Security-Policy" not in headers
