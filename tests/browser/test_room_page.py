"""The live room page (/room/{room}) in headless Chromium: join links, presence, refusals."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, expect

from orbridge.signaling.cli.client import RoomClient
from tests.browser.conftest import Pages, StartWebNode, WebNode

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOM = "or-1"


def row(page: Page, identity: str) -> Locator:
    return page.locator(f'[data-testid="participant"][data-identity="{identity}"]')


async def open_joined(pages: Pages, url: str) -> Page:
    page = await pages.new_page(url)
    await expect(page.get_by_test_id("room")).to_have_attribute("data-state", "joined")
    return page


async def test_two_pages_see_each_other_and_one_leaves(web_node: WebNode, pages: Pages) -> None:
    surgeon = await open_joined(
        pages, web_node.room_url(ROOM, "surgeon", "Dr Li", identity="dr-li")
    )
    expert = await open_joined(
        pages, web_node.room_url(ROOM, "expert", "Dr Wang", identity="dr-wang")
    )

    await expect(surgeon.get_by_test_id("room-name")).to_have_text(ROOM)
    await expect(surgeon.get_by_test_id("self")).to_contain_text("You are Dr Li (surgeon)")
    await expect(expert.get_by_test_id("self")).to_contain_text("You are Dr Wang (expert)")
    for page in (surgeon, expert):
        await expect(page.get_by_test_id("presence-count")).to_have_text("2")
        await expect(row(page, "dr-li")).to_contain_text("surgeon")
        await expect(row(page, "dr-wang")).to_contain_text("expert")
    # Join order: the surgeon came first.
    await expect(expert.get_by_test_id("participant-name")).to_have_text(["Dr Li", "Dr Wang"])
    await expect(row(surgeon, "dr-li")).to_have_class("is-self")
    node_id = web_node.node.info.node_id
    await expect(row(surgeon, "dr-wang").get_by_test_id("participant-node")).to_have_text(node_id)
    await expect(row(surgeon, "dr-wang").get_by_test_id("participant-quality")).to_have_text(
        "unknown"
    )

    await expert.close()
    await expect(row(surgeon, "dr-wang")).to_have_count(0)
    await expect(surgeon.get_by_test_id("presence-count")).to_have_text("1")
    await expect(row(surgeon, "dr-li")).to_have_count(1)
    # No CSP violation, no failed load, no script error on a normal visit.
    assert pages.console_errors == []


async def test_python_client_is_seen_by_the_browser(web_node: WebNode, pages: Pages) -> None:
    page = await open_joined(pages, web_node.room_url(ROOM, "surgeon", "Dr Li", identity="dr-li"))

    client = await web_node.client(ROOM, "expert", identity="dr-wang", name="Dr Wang")
    assert client.snapshot is not None
    assert [p["identity"] for p in client.snapshot["participants"]] == ["dr-li", "dr-wang"]
    await expect(row(page, "dr-wang")).to_contain_text("Dr Wang")
    await expect(row(page, "dr-wang").get_by_test_id("participant-role")).to_have_text("expert")

    # participant_updated reaches the page: quality and display name.
    await client.request("update", {"quality": "poor", "name": "Prof Wang"})
    quality = row(page, "dr-wang").get_by_test_id("participant-quality")
    await expect(quality).to_have_text("poor")
    await expect(quality).to_have_class("quality quality-poor")
    await expect(row(page, "dr-wang").get_by_test_id("participant-name")).to_have_text("Prof Wang")

    # And the other way round: the client hears the page leave.
    await client.close()
    await expect(row(page, "dr-wang")).to_have_count(0)
    other = await web_node.client(ROOM, "trainee", identity="student-1", name="Student")
    await page.close()
    left = await other.next_event("participant_left", wait=10)
    assert left == {"identity": "dr-li", "reason": "disconnected"}


async def test_expired_token_shows_the_error(web_node: WebNode, pages: Pages) -> None:
    url = web_node.room_url(ROOM, "expert", "Dr Wang", ttl_s=3600, now=time.time() - 3 * 3600)
    page = await pages.new_page(url)
    error = page.get_by_test_id("error")
    await expect(error).to_be_visible()
    await expect(page.get_by_test_id("error-code")).to_have_text("token_expired")
    await expect(error).to_contain_text("expired")
    await expect(page.get_by_test_id("room")).to_have_attribute("data-state", "error")
    await expect(page.get_by_test_id("self")).to_be_hidden()
    # A new link can be pasted right there.
    await expect(page.get_by_test_id("token-form")).to_be_visible()


async def test_token_for_another_room_is_refused(web_node: WebNode, pages: Pages) -> None:
    token = web_node.token("or-2", "expert", "Dr Wang")
    page = await pages.new_page(web_node.join_url(ROOM, token))
    await expect(page.get_by_test_id("error-code")).to_have_text("token_wrong_room")


async def test_token_leaves_the_address_bar(web_node: WebNode, pages: Pages) -> None:
    url = web_node.room_url(ROOM, "expert", "Dr Wang", identity="dr-wang")
    assert "#token=" in url
    page = await open_joined(pages, url)
    assert page.url == f"{web_node.url}/room/{ROOM}"
    assert await page.evaluate("location.hash") == ""
    assert "token" not in await page.evaluate("location.href")
    # A reload in the same tab joins again without the link (the token stays in this tab).
    await page.reload()
    await expect(page.get_by_test_id("room")).to_have_attribute("data-state", "joined")
    await expect(page.get_by_test_id("self")).to_contain_text("Dr Wang")


async def test_trainee_sees_everyone_with_their_roles(
    web_node: WebNode, pages: Pages, artifacts: Path
) -> None:
    await web_node.client(ROOM, "surgeon", identity="dr-li", name="Dr Li")
    await web_node.client(ROOM, "expert", identity="dr-wang", name="Dr Wang")
    await web_node.client(ROOM, "moderator", identity="it-zhao", name="Zhao (IT)")
    page = await open_joined(
        pages, web_node.room_url(ROOM, "trainee", "Student Chen", identity="student-chen")
    )
    await expect(page.get_by_test_id("self")).to_contain_text("You are Student Chen (trainee)")
    await expect(page.get_by_test_id("presence-count")).to_have_text("4")
    await expect(page.get_by_test_id("participant-role")).to_have_text(
        ["surgeon", "expert", "moderator", "trainee"]
    )
    await expect(page.get_by_test_id("participant-name")).to_have_text(
        ["Dr Li", "Dr Wang", "Zhao (IT)", "Student Chen"]
    )
    for identity, role in (("dr-li", "surgeon"), ("student-chen", "trainee")):
        await expect(row(page, identity)).to_have_attribute("data-role", role)
    await page.screenshot(path=artifacts / "room-page-trainee.png", full_page=True)
    assert (artifacts / "room-page-trainee.png").stat().st_size > 1000


async def test_paste_box_when_the_link_has_no_token(web_node: WebNode, pages: Pages) -> None:
    page = await pages.new_page(f"{web_node.url}/room/{ROOM}")
    form = page.get_by_test_id("token-form")
    await expect(form).to_be_visible()
    await expect(page.get_by_test_id("room")).to_have_attribute("data-state", "needs-token")
    await expect(page.get_by_test_id("presence-section")).to_be_hidden()

    url = web_node.room_url(ROOM, "expert", "Dr Wang", identity="dr-wang")
    await page.get_by_label("Join link or token").fill(url)  # the whole link works
    await page.get_by_test_id("token-submit").click()
    await expect(page.get_by_test_id("room")).to_have_attribute("data-state", "joined")
    await expect(form).to_be_hidden()
    await expect(row(page, "dr-wang")).to_have_count(1)


async def test_removed_by_a_moderator_shows_a_banner(web_node: WebNode, pages: Pages) -> None:
    page = await open_joined(
        pages, web_node.room_url(ROOM, "expert", "Dr Wang", identity="dr-wang")
    )
    moderator = await web_node.client(ROOM, "moderator", identity="it-zhao", name="Zhao")
    await moderator.request("remove_participant", {"identity": "dr-wang", "reason": "wrong room"})
    banner = page.get_by_test_id("banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_have_attribute("data-reason", "removed")
    await expect(banner).to_contain_text("removed from this room by it-zhao: wrong room")
    await expect(page.get_by_test_id("room")).to_have_attribute("data-state", "closed")


async def test_an_ended_consultation_shows_a_banner(web_node: WebNode, pages: Pages) -> None:
    page = await open_joined(
        pages, web_node.room_url(ROOM, "expert", "Dr Wang", identity="dr-wang")
    )
    moderator = await web_node.client(ROOM, "moderator", identity="it-zhao", name="Zhao")
    await moderator.request("end_consultation")
    banner = page.get_by_test_id("banner")
    await expect(banner).to_have_attribute("data-reason", "consultation_ended")
    await expect(banner).to_contain_text("consultation was ended by it-zhao")
    await expect(page.get_by_test_id("room")).to_have_attribute("data-state", "closed")


async def test_a_copy_of_the_link_in_a_second_tab_cannot_take_over_the_first(
    web_node: WebNode, pages: Pages
) -> None:
    """The first tab holds a token of its own once joined (refresh_token), so the same link
    opened elsewhere is refused while the first tab is there, and works once it is closed."""
    token = web_node.token(ROOM, "expert", "Dr Wang", identity="dr-wang")
    first = await open_joined(pages, web_node.join_url(ROOM, token))
    await first.wait_for_function(
        "(t) => window.orbridge.connection.token !== t", arg=token, timeout=10_000
    )
    second = await pages.new_page(web_node.join_url(ROOM, token))
    error = second.get_by_test_id("error")
    await expect(error).to_have_attribute("data-code", "duplicate_identity")
    await expect(second.get_by_test_id("error-message")).to_contain_text("another tab or device")
    await expect(first.get_by_test_id("banner")).to_be_hidden()
    await expect(first.get_by_test_id("presence-count")).to_have_text("1")
    await first.close()
    await second.reload()  # this tab kept the link for a reload
    await expect(second.get_by_test_id("presence-count")).to_have_text("1")
    await expect(second.get_by_test_id("error")).to_be_hidden()


async def test_server_shutdown_banner_then_rejoin(
    start_web_node: StartWebNode, pages: Pages
) -> None:
    node = await start_web_node()
    page = await open_joined(pages, node.room_url(ROOM, "surgeon", "Dr Li", identity="dr-li"))
    await node.stop()
    banner = page.get_by_test_id("banner")
    await expect(banner).to_have_attribute("data-reason", "server_shutdown")
    await expect(banner).to_contain_text("reconnect")
    await expect(page.get_by_test_id("room")).to_have_attribute("data-state", "reconnecting")

    # The node comes back on the same address: the page reconnects and joins by itself.
    again = await start_web_node(port=node.port)
    await expect(page.get_by_test_id("room")).to_have_attribute(
        "data-state", "joined", timeout=20_000
    )
    await expect(banner).to_be_hidden()
    client = await again.client(ROOM, "expert", identity="dr-wang", name="Dr Wang")
    assert client.snapshot is not None
    assert [p["identity"] for p in client.snapshot["participants"]] == ["dr-li", "dr-wang"]
    await expect(row(page, "dr-wang")).to_have_count(1)


async def test_room_client_and_page_agree_on_the_snapshot(web_node: WebNode, pages: Pages) -> None:
    """The page's list after many joins and leaves equals a fresh snapshot from Python."""
    page = await open_joined(
        pages, web_node.room_url(ROOM, "expert", "Dr Wang", identity="dr-wang")
    )
    clients: list[RoomClient] = []
    for i in range(6):
        clients.append(await web_node.client(ROOM, "trainee", identity=f"t-{i}", name=f"T {i}"))
    await asyncio.gather(*(c.close() for c in clients[::2]))
    observer = await web_node.client(ROOM, "trainee", identity="observer", name="Observer")
    assert observer.snapshot is not None
    expected = [p["identity"] for p in observer.snapshot["participants"]]
    assert expected == ["dr-wang", "t-1", "t-3", "t-5", "observer"]
    await expect(page.locator('[data-testid="participant"]')).to_have_count(len(expected))
    identities = await page.locator('[data-testid="participant"]').evaluate_all(
        "rows => rows.map(r => r.dataset.identity)"
    )
    assert identities == expected
