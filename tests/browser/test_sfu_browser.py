"""The SFU with real Chromium: the OR publishes its (fake) camera and microphone, two experts
receive the video at full rate, the OR hears an expert, and the server never decodes or
encodes video. The server runs as its own process, so its codec counters are its own."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from tests.browser.conftest import Pages
from tests.support import SECRET, ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="session")
ROOM = "or-7"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    node = ServerProcess("--data-dir", str(tmp_path))
    yield node
    node.stop()


def join_url(node: ServerProcess, role: Role, identity: str, name: str) -> str:
    token = tokens.mint(SECRET, room=ROOM, role=role, name=name, identity=identity)
    return tokens.join_url(node.url, ROOM, token)


def metrics(node: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(node.url + "/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("orbridge_") and " " in line
    }


async def joined(pages: Pages, url: str) -> Page:
    page = await pages.new_page(url)
    await expect(page.get_by_test_id("room")).to_have_attribute("data-state", "joined")
    return page


async def video_frames(page: Page, source: str = "laparoscope") -> dict[str, Any]:
    """framesDecoded of the video track from `source` this page receives (0 if none)."""
    return await page.evaluate(
        """async (source) => {
            const m = window.orbridge.media.session;
            if (!m) return {id: null, frames: 0};
            const stats = await m.videoStats();
            for (const [id, s] of Object.entries(stats)) {
                const info = [...m.byMid.values()].find((t) => t.id === id);
                if (info && info.source === source && m.received.has(id))
                    return {id, frames: s.framesDecoded};
            }
            return {id: null, frames: 0};
        }""",
        source,
    )


async def frames_encoded(page: Page) -> int:
    return int(
        await page.evaluate(
            """async () => {
                let n = 0;
                const pc = window.orbridge.media.session.publisher;
                (await pc.getStats()).forEach((s) => {
                    if (s.type === "outbound-rtp" && s.kind === "video") n += s.framesEncoded || 0;
                });
                return n;
            }"""
        )
    )


async def wait_frames(page: Page, above: int, within: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = await video_frames(page)
        if got["frames"] > above:
            return got
        await asyncio.sleep(0.25)
    raise AssertionError(f"video did not arrive: {await video_frames(page)}")


async def test_or_to_two_experts_without_transcoding(
    server: ServerProcess, pages: Pages, artifacts: Path
) -> None:
    expert_a = await joined(pages, join_url(server, Role.EXPERT, "dr-wang", "Dr Wang"))
    expert_b = await joined(pages, join_url(server, Role.EXPERT, "dr-li", "Dr Li"))
    surgeon = await joined(pages, join_url(server, Role.SURGEON, "dr-ma", "Dr Ma"))
    await surgeon.get_by_test_id("publish-video").click()
    await expect(surgeon.get_by_test_id("unpublish")).to_be_visible()

    # both experts get the laparoscope tile and decode it at full rate over 10 s
    for page in (expert_a, expert_b):
        tile = page.locator('[data-testid="tile"][data-source="laparoscope"]')
        await expect(tile).to_have_count(1)
        await wait_frames(page, 5)
    sent_before = await frames_encoded(surgeon)
    start = [await video_frames(p) for p in (expert_a, expert_b)]
    began = time.monotonic()
    await asyncio.sleep(10)
    end = [await video_frames(p) for p in (expert_a, expert_b)]
    elapsed = time.monotonic() - began
    sent = (await frames_encoded(surgeon) - sent_before) / elapsed
    rates = [(e["frames"] - s["frames"]) / elapsed for s, e in zip(start, end, strict=True)]
    assert min(rates) >= 20, f"experts decoded {rates} fps"
    assert min(rates) >= 0.9 * sent, f"the OR sent {sent:.1f} fps, experts decoded {rates}"

    # an expert talks; the OR receives the sound
    await expert_a.get_by_test_id("publish-audio").click()
    await expect(expert_a.get_by_test_id("unpublish")).to_be_visible()
    heard = 0.0
    for _ in range(40):
        audio = await surgeon.evaluate("() => window.orbridge.media.session.audioStats()")
        heard = audio["packetsReceived"]
        if heard > 50:
            break
        await asyncio.sleep(0.25)
    assert heard > 50, "the OR did not receive the expert's voice"
    # the surgeon hears but (by its grants) gets no video
    assert (await video_frames(surgeon))["id"] is None

    # the server forwarded everything without a single video decoder or encoder
    m = metrics(server)
    assert m['orbridge_media_codecs_created{kind="video",op="decoder"}'] == 0
    assert m['orbridge_media_codecs_created{kind="video",op="encoder"}'] == 0
    assert m['orbridge_media{what="tracks"}'] == 3  # OR video + OR microphone + expert voice
    await expert_a.screenshot(path=str(artifacts / "sfu-expert.png"))

    # the OR leaves: the experts are told and the tile goes away
    loaded_at = await expert_a.evaluate("() => performance.timeOrigin")
    await surgeon.close()
    for page in (expert_a, expert_b):
        await expect(page.locator('[data-testid="tile"][data-source="laparoscope"]')).to_have_count(
            0
        )
        # the OR's video and microphone end one after the other: wait for both
        await page.wait_for_function(
            "() => window.orbridge.media.counts.track_ended >= 2", timeout=10_000
        )

    # it comes back and publishes again: video again, and the experts never reloaded
    surgeon = await joined(pages, join_url(server, Role.SURGEON, "dr-ma", "Dr Ma"))
    await surgeon.get_by_test_id("publish-video").click()
    for page in (expert_a, expert_b):
        again = await wait_frames(page, 10)
        assert again["id"] != start[0]["id"]  # a new track
    assert await expert_a.evaluate("() => performance.timeOrigin") == loaded_at
    assert json.dumps(m)  # the metrics were readable JSON-safe numbers
