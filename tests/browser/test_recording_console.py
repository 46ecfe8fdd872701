"""The live consoles' recording panel in Chromium: a moderator starts a recording with the
consent state, everyone (the OR included) sees that the session is recorded, an expert marks
a chapter, the moderator stops it and the recording is in the store with what was entered."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.browser.conftest import Pages, WebNode

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOM = "or-7"


async def test_start_indicate_chapter_stop(pages: Pages, web_node: WebNode) -> None:
    moderator = await pages.new_page(web_node.room_url(ROOM, "moderator", "Dr Li", "mod-li"))
    surgeon = await pages.new_page(web_node.room_url(ROOM, "surgeon", "Dr Ma", "dr-ma"))
    expert = await pages.new_page(web_node.room_url(ROOM, "expert", "Dr Wang", "dr-wang"))
    for page in (moderator, surgeon, expert):
        await expect(page.get_by_test_id("room")).to_have_attribute("data-state", "joined")
        await expect(page.get_by_test_id("rec-indicator")).to_have_text("Not recording")
    # only the moderator (record grant) may start; the OR and the expert see no form
    await expect(surgeon.get_by_test_id("record-form")).to_be_hidden()
    await expect(expert.get_by_test_id("record-form")).to_be_hidden()

    await moderator.get_by_test_id("record-procedure").fill("Laparoscopic appendectomy")
    await moderator.get_by_test_id("record-hospital").fill("Gande County Hospital")
    await moderator.get_by_test_id("record-tags").fill("appendix, teaching")
    await moderator.get_by_test_id("record-consent").select_option("written")
    await moderator.get_by_test_id("record-start").click()
    for page in (moderator, surgeon, expert):
        indicator = page.get_by_test_id("rec-indicator")
        await expect(indicator).to_have_attribute("data-state", "recording")
        await expect(indicator).to_contain_text("Recording")
    await expect(moderator.get_by_test_id("record-stop")).to_be_visible()
    await expect(surgeon.get_by_test_id("record-stop")).to_be_hidden()

    await expert.get_by_test_id("chapter-title").fill("Base of the appendix")
    await expert.get_by_test_id("chapter-mark").click()
    await expect(moderator.get_by_test_id("recording-status")).to_contain_text(
        "Chapter marked: Base of the appendix"
    )
    # a late joiner sees the recording from its snapshot
    trainee = await pages.new_page(web_node.room_url(ROOM, "trainee", "Student", "student-1"))
    await expect(trainee.get_by_test_id("rec-indicator")).to_have_attribute(
        "data-state", "recording"
    )

    await moderator.get_by_test_id("record-stop").click()
    for page in (moderator, surgeon, expert, trainee):
        await expect(page.get_by_test_id("rec-indicator")).to_have_text("Not recording")
    [manifest] = [m for m in web_node.node.recordings.store.list() if m.room == ROOM]
    assert manifest.state == "complete"
    assert (manifest.procedure, manifest.hospital) == (
        "Laparoscopic appendectomy",
        "Gande County Hospital",
    )
    assert manifest.tags == ["appendix", "teaching"] and manifest.consent.state == "written"
    assert [c.title for c in manifest.chapters] == ["Base of the appendix"]
    assert {p.identity for p in manifest.participants} >= {"mod-li", "dr-ma", "dr-wang"}
