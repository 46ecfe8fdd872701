"""The role consoles on /room/{room} in headless Chromium: an expert draws on the laparoscope
video the OR sends from Chromium's fake camera, and the OR, a trainee and late joiners see it on
their overlay canvases (checked pixel by pixel); undo and clear; the trainee may not draw; the
vitals panel follows a Python device client; freeze-frame and push-to-talk."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from orbridge.signaling.cli.client import RoomClient
from tests.browser.conftest import Pages, WebNode

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOM = "or-3"
WAIT_MS = 10_000
LAPAROSCOPE = '[data-testid="tile"][data-source="laparoscope"] [data-testid="overlay-canvas"]'
PREVIEW = '[data-testid="preview-wrap"] [data-testid="overlay-canvas"]'
ON_LINE = [(0.25 + 0.05 * i, 0.5) for i in range(1, 9)]  # along the arrow (0.25,.5)->(0.75,.5)
OFF_LINE = [(0.5, 0.2), (0.5, 0.8), (0.1, 0.1), (0.9, 0.9), (0.15, 0.5), (0.85, 0.5)]

# The picture rectangle of an overlay canvas (object-fit: contain), in CSS pixels of the canvas.
PICTURE_JS = """
const picture = (canvas) => {
  const video = canvas.previousElementSibling;
  const box = canvas.getBoundingClientRect();
  const vw = video.videoWidth, vh = video.videoHeight;
  if (!vw || !vh || !box.width) return null;
  const s = Math.min(box.width / vw, box.height / vh);
  const w = vw * s, h = vh * s;
  return {box, x: (box.width - w) / 2, y: (box.height - h) / 2, w, h};
};
"""

PIXELS_JS = (
    "([sel, pts]) => {"
    + PICTURE_JS
    + """
  const canvas = document.querySelector(sel);
  if (!canvas || !canvas.width) return null;
  const p = picture(canvas);
  if (!p) return null;
  const dpr = canvas.width / p.box.width;
  const ctx = canvas.getContext("2d");
  return pts.map(([x, y]) => Array.from(ctx.getImageData(
      Math.round((p.x + x * p.w) * dpr), Math.round((p.y + y * p.h) * dpr), 1, 1).data));
}"""
)

# True once every point of `on` shows `color` and none of `off` shows anything.
DRAWN_JS = (
    "([sel, color, on, off]) => {"
    + PICTURE_JS
    + """
  const canvas = document.querySelector(sel);
  if (!canvas || !canvas.width) return false;
  const p = picture(canvas);
  if (!p) return false;
  const dpr = canvas.width / p.box.width;
  const ctx = canvas.getContext("2d");
  const px = ([x, y]) => ctx.getImageData(
      Math.round((p.x + x * p.w) * dpr), Math.round((p.y + y * p.h) * dpr), 1, 1).data;
  const rgb = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  const isColor = (d) => d[3] > 200 && rgb.every((c, i) => Math.abs(d[i] - c) <= 12);
  return on.every((pt) => isColor(px(pt))) && off.every((pt) => px(pt)[3] === 0);
}"""
)

# True once none of the points shows anything.
BLANK_JS = (
    "([sel, pts]) => {"
    + PICTURE_JS
    + """
  const canvas = document.querySelector(sel);
  if (!canvas || !canvas.width) return false;
  const p = picture(canvas);
  if (!p) return false;
  const dpr = canvas.width / p.box.width;
  const ctx = canvas.getContext("2d");
  return pts.every(([x, y]) => ctx.getImageData(
      Math.round((p.x + x * p.w) * dpr), Math.round((p.y + y * p.h) * dpr), 1, 1).data[3] === 0);
}"""
)

# The viewport point of picture coordinates (x, y) on an overlay canvas.
CLIENT_POINT_JS = (
    "([sel, x, y]) => {"
    + PICTURE_JS
    + """
  const p = picture(document.querySelector(sel));
  return p && [p.box.left + p.x + x * p.w, p.box.top + p.y + y * p.h];
}"""
)

VITALS = [
    {"kind": "hr", "value": 72},
    {"kind": "spo2", "value": 97},
    {"kind": "nibp_sys", "value": 120},
    {"kind": "nibp_dia", "value": 80},
    {"kind": "nibp_mean", "value": 93},
    {"kind": "rr", "value": 14},
    {"kind": "temp", "value": 36.8},
    {"kind": "etco2", "value": 35},
]


# helpers -------------------------------------------------------------------------------------
async def joined(pages: Pages, url: str) -> Page:
    page = await pages.new_page(url)
    await expect(page.get_by_test_id("room")).to_have_attribute("data-state", "joined")
    return page


async def video_ready(page: Page, selector: str) -> None:
    """The overlay `selector` sits on a video that shows frames."""
    await page.wait_for_function(
        """(sel) => {
            const c = document.querySelector(sel);
            const v = c && c.previousElementSibling;
            return !!v && v.videoWidth > 0 && v.readyState >= 2;
        }""",
        arg=selector,
        timeout=20_000,
    )


async def drag(page: Page, selector: str, a: tuple[float, float], b: tuple[float, float]) -> None:
    """Real mouse events from picture point `a` to `b` on the overlay `selector`."""
    await page.locator(selector).scroll_into_view_if_needed()
    start = await page.evaluate(CLIENT_POINT_JS, [selector, *a])
    end = await page.evaluate(CLIENT_POINT_JS, [selector, *b])
    assert start and end, "the overlay has no picture yet"
    await page.mouse.move(*start)
    await page.mouse.down()
    await page.mouse.move(*end, steps=10)
    await page.mouse.up()


async def drawn(page: Page, selector: str, color: str, on: list[Any], off: list[Any]) -> None:
    try:
        await page.wait_for_function(
            DRAWN_JS, arg=[selector, color, on, off], timeout=WAIT_MS, polling=100
        )
    except Exception as exc:
        pixels = await page.evaluate(PIXELS_JS, [selector, on + off])
        raise AssertionError(f"{page.url}: not drawn in {color}: {pixels}") from exc


async def blank(page: Page, selector: str, pts: list[Any]) -> None:
    await page.wait_for_function(BLANK_JS, arg=[selector, pts], timeout=WAIT_MS, polling=100)


async def kept(page: Page) -> list[dict[str, Any]]:
    return await page.evaluate("() => window.orbridge.annotations.kept()")


async def wait_kept(page: Page, count: int) -> list[dict[str, Any]]:
    await page.wait_for_function(
        "(n) => window.orbridge.annotations && window.orbridge.annotations.kept().length === n",
        arg=count,
        timeout=WAIT_MS,
    )
    return await kept(page)


def ecg_sample(t: float) -> float:
    """A plausible lead II beat at 72/min: P, QRS and T waves as bumps."""
    phase = (t * 72 / 60) % 1.0
    bump = lambda c, w, a: a * math.exp(-(((phase - c) / w) ** 2))  # noqa: E731
    return (
        bump(0.2, 0.03, 0.15)
        - bump(0.36, 0.01, 0.15)
        + bump(0.4, 0.012, 1.2)
        + bump(0.62, 0.05, 0.3)
    )


@pytest_asyncio.fixture(loop_scope="session")
async def monitor(web_node: WebNode) -> AsyncIterator[RoomClient]:
    """A patient monitor (a `device` client) sending numerics and ECG in 40 ms batches."""
    client = await web_node.client(ROOM, "device", identity="monitor-3", name="Monitor 3")
    await client.request("publish_vitals", {"numerics": VITALS})

    async def ecg() -> None:
        seq, rate, n = 0, 500, 20
        start = int(time.time() * 1000)
        while True:
            t0 = start + seq * 40
            samples = [round(ecg_sample((t0 + i * 2) / 1000), 3) for i in range(n)]
            wave = {"kind": "ecg_ii", "start_ms": t0, "rate_hz": rate, "seq": seq,
                    "samples": samples}  # fmt: skip
            with contextlib.suppress(Exception):
                await client.request("publish_vitals", {"waveforms": [wave]})
            seq += 1
            await asyncio.sleep(max(0.0, (start + seq * 40) / 1000 - time.time()))

    task = asyncio.create_task(ecg())
    yield client
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# tests ---------------------------------------------------------------------------------------
async def test_expert_draws_and_everyone_sees_it(
    web_node: WebNode, pages: Pages, monitor: RoomClient, artifacts: Path
) -> None:
    surgeon = await joined(pages, web_node.room_url(ROOM, "surgeon", "Dr Ma", identity="dr-ma"))
    await expect(surgeon.get_by_test_id("room")).to_have_attribute("data-console", "or")
    await surgeon.get_by_test_id("publish-video").click()
    await expect(surgeon.get_by_test_id("unpublish")).to_be_visible()
    await video_ready(surgeon, PREVIEW)

    expert = await joined(pages, web_node.room_url(ROOM, "expert", "Dr Wang", identity="dr-wang"))
    trainee = await joined(
        pages, web_node.room_url(ROOM, "trainee", "Student Chen", identity="student-chen")
    )
    await expect(expert.get_by_test_id("room")).to_have_attribute("data-console", "expert")
    await expect(trainee.get_by_test_id("room")).to_have_attribute("data-console", "trainee")
    for page in (expert, trainee):
        await video_ready(page, LAPAROSCOPE)
    await expect(expert.get_by_test_id("annotate-toolbar")).to_be_visible()
    await expect(trainee.get_by_test_id("annotate-toolbar")).to_be_hidden()
    await expect(expert.get_by_test_id("clear-all")).to_be_hidden()  # a moderator's grant

    # the expert draws an arrow with the mouse; the OR and the trainee render it
    await expert.keyboard.press("a")
    await expect(expert.get_by_test_id("tool-arrow")).to_have_attribute("aria-pressed", "true")
    await drag(expert, LAPAROSCOPE, (0.25, 0.5), (0.75, 0.5))
    [arrow] = await wait_kept(surgeon, 1)
    assert arrow["type"] == "arrow" and arrow["author"] == "dr-wang"
    assert arrow["frozen"] is False and isinstance(arrow["frame"]["rtp_timestamp"], int)
    (x0, y0), (x1, _) = arrow["points"]
    assert abs(x0 - 0.25) < 0.01 and abs(x1 - 0.75) < 0.01 and abs(y0 - 0.5) < 0.01
    color = arrow["color"]
    for page, selector in ((surgeon, PREVIEW), (trainee, LAPAROSCOPE), (expert, LAPAROSCOPE)):
        await drawn(page, selector, color, ON_LINE, OFF_LINE)
    latencies = await surgeon.evaluate("() => window.orbridge.annotationLatencies")
    assert [sample["id"] for sample in latencies] == [arrow["id"]]
    assert 0 <= latencies[0]["latency_ms"] < 1000
    await expect(surgeon.get_by_test_id("annotation-latency")).to_have_text(
        f"{round(latencies[0]['latency_ms'])} ms"
    )
    rtt = await expert.get_by_test_id("annotation-rtt").get_attribute("data-ms")
    assert rtt is not None and 0 <= int(rtt) < 1000

    # the trainee may not draw, whatever its page sends
    refused = await trainee.evaluate(
        """(track) => window.orbridge.connection.request("annotate",
               {type: "arrow", track_id: track, points: [[0.1, 0.1], [0.2, 0.2]]})
             .then(() => "accepted", (err) => err.code)""",
        arrow["track_id"],
    )
    assert refused == "forbidden"

    # a pointer is shown and fades; a circle and a text label are kept
    await expert.keyboard.press("l")
    await drag(expert, LAPAROSCOPE, (0.4, 0.3), (0.45, 0.32))
    await surgeon.wait_for_function(
        "() => window.orbridge.annotationLatencies.some((s) => s.type === 'pointer')",
        timeout=WAIT_MS,
    )
    await expert.keyboard.press("c")
    await drag(expert, LAPAROSCOPE, (0.5, 0.5), (0.6, 0.5))
    await expert.keyboard.press("t")
    await expect(expert.get_by_test_id("annotation-text")).to_be_focused()
    await expert.get_by_test_id("annotation-text").fill("cystic duct")
    await expert.locator(LAPAROSCOPE).scroll_into_view_if_needed()
    start = await expert.evaluate(CLIENT_POINT_JS, [LAPAROSCOPE, 0.2, 0.7])
    await expert.mouse.click(*start)
    await expert.keyboard.press("p")
    await drag(expert, LAPAROSCOPE, (0.7, 0.7), (0.8, 0.8))
    items = await wait_kept(surgeon, 4)
    assert [a["type"] for a in items] == ["arrow", "circle", "text", "stroke"]
    assert items[2]["text"] == "cystic duct" and items[2]["author_name"] == "Dr Wang"
    assert len(items[3]["points"]) >= 2

    # a late joiner gets the overlay in its snapshot and draws it
    late = await joined(pages, web_node.room_url(ROOM, "expert", "Dr Li", identity="dr-li"))
    assert [a["id"] for a in await wait_kept(late, 4)] == [a["id"] for a in items]
    await video_ready(late, LAPAROSCOPE)
    await drawn(late, LAPAROSCOPE, color, ON_LINE[:5], [(0.5, 0.2), (0.9, 0.1)])

    # screenshots of the three consoles, with vitals and drawings
    await expect(trainee.get_by_test_id("vitals-hr")).to_have_text("72")
    await asyncio.sleep(1.5)  # some ECG on the strip
    for name, page in (("expert", expert), ("or", surgeon), ("trainee", trainee)):
        path = artifacts / f"console-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000

    # undo takes the stroke away; clear takes the rest
    await expert.get_by_test_id("undo").click()
    assert [a["type"] for a in await wait_kept(surgeon, 3)] == ["arrow", "circle", "text"]
    await expert.get_by_test_id("clear-own").click()
    await wait_kept(surgeon, 0)
    await blank(surgeon, PREVIEW, [*ON_LINE, (0.6, 0.5), (0.2, 0.7)])
    await blank(trainee, LAPAROSCOPE, ON_LINE)
    await expert.get_by_test_id("undo").click()
    await expect(expert.get_by_test_id("annotate-status")).to_contain_text("Nothing")

    # a moderator may clear everyone's drawings
    await drag(expert, LAPAROSCOPE, (0.25, 0.5), (0.75, 0.5))  # a pen stroke this time
    await wait_kept(surgeon, 1)
    await drawn(surgeon, PREVIEW, color, ON_LINE[1:6], OFF_LINE[:4])
    moderator = await joined(
        pages, web_node.room_url(ROOM, "moderator", "Zhao", identity="it-zhao")
    )
    await expect(moderator.get_by_test_id("clear-all")).to_be_visible()
    await moderator.get_by_test_id("clear-all").click()
    await wait_kept(surgeon, 0)
    await blank(surgeon, PREVIEW, ON_LINE)
    assert pages.console_errors == []


async def test_vitals_panel_follows_the_monitor(
    web_node: WebNode, pages: Pages, monitor: RoomClient
) -> None:
    trainee = await joined(
        pages, web_node.room_url(ROOM, "trainee", "Student Chen", identity="student-chen")
    )
    panel = trainee.get_by_test_id("vitals")
    await expect(panel).to_be_visible()
    # from the snapshot
    await expect(trainee.get_by_test_id("vitals-hr")).to_have_text("72")
    await expect(trainee.get_by_test_id("vitals-spo2")).to_have_text("97")
    await expect(trainee.get_by_test_id("vitals-nibp")).to_have_text("120/80 (93)")
    await expect(trainee.get_by_test_id("vitals-rr")).to_have_text("14")
    await expect(trainee.get_by_test_id("vitals-temp")).to_have_text("36.8")
    await expect(trainee.get_by_test_id("vitals-etco2")).to_have_text("35")
    banner = trainee.get_by_test_id("alarm-banner")
    await expect(banner).to_be_hidden()
    # live
    await monitor.request("publish_vitals", {"numerics": [{"kind": "hr", "value": 88}]})
    await expect(trainee.get_by_test_id("vitals-hr")).to_have_text("88")
    await monitor.request("publish_vitals", {"numerics": [{"kind": "spo2", "value": 85}]})
    await expect(trainee.get_by_test_id("vitals-spo2")).to_have_text("85")
    await expect(banner).to_be_visible()
    await expect(banner).to_have_attribute("role", "alert")
    await expect(banner).to_contain_text("85")
    await expect(banner).to_contain_text("LOW")
    # a late joiner sees the active alarm from its snapshot
    expert = await joined(pages, web_node.room_url(ROOM, "expert", "Dr Wang", identity="dr-wang"))
    await expect(expert.get_by_test_id("alarm-banner")).to_contain_text("85")
    # the ECG strip receives samples
    await trainee.wait_for_function(
        "() => window.orbridge.console.vitals.ecg.samples > 200", timeout=WAIT_MS
    )
    await monitor.request("publish_vitals", {"numerics": [{"kind": "spo2", "value": 96}]})
    await expect(banner).to_be_hidden()
    await expect(expert.get_by_test_id("alarm-banner")).to_be_hidden()


async def test_freeze_frame_and_push_to_talk(web_node: WebNode, pages: Pages) -> None:
    surgeon = await joined(pages, web_node.room_url(ROOM, "surgeon", "Dr Ma", identity="dr-ma"))
    await surgeon.get_by_test_id("publish-video").click()
    await video_ready(surgeon, PREVIEW)
    expert = await joined(pages, web_node.room_url(ROOM, "expert", "Dr Wang", identity="dr-wang"))
    await video_ready(expert, LAPAROSCOPE)
    await expert.wait_for_function(
        "() => { const m = window.orbridge.console.overlays.main;"
        " return !!m && m.clock.latest && m.clock.latest.rtp_timestamp !== undefined; }",
        timeout=WAIT_MS,
    )

    # freeze: the video stops on a frame; drawings carry that frame and frozen: true
    await expert.get_by_test_id("freeze").click()
    await expect(expert.get_by_test_id("freeze")).to_have_attribute("aria-pressed", "true")
    video = expert.locator('[data-testid="tile"][data-source="laparoscope"] video')
    assert await video.evaluate("(v) => v.paused")
    frozen = await expert.evaluate("() => window.orbridge.console.overlays.main.freeze.frame")
    await asyncio.sleep(0.3)
    await drag(expert, LAPAROSCOPE, (0.3, 0.3), (0.6, 0.6))
    [arrow] = await wait_kept(surgeon, 1)
    assert arrow["frozen"] is True
    assert arrow["frame"]["rtp_timestamp"] == frozen["rtp_timestamp"]
    await expert.keyboard.press("f")  # back to live
    await expect(expert.get_by_test_id("freeze")).to_have_attribute("aria-pressed", "false")
    await expert.wait_for_function(
        "() => !document.querySelector('[data-source=laparoscope] video').paused",
        timeout=WAIT_MS,
    )

    # push-to-talk: the microphone is published on the first press, live only while held
    ptt = expert.get_by_test_id("ptt")
    await expect(ptt).to_be_visible()
    await ptt.scroll_into_view_if_needed()
    box = await ptt.bounding_box()
    assert box is not None
    await expert.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await expert.mouse.down()
    await expect(ptt).to_have_attribute("aria-pressed", "true")
    await expert.wait_for_function(
        "() => { const t = window.orbridge.media.micTrack(); return !!t && t.enabled; }",
        timeout=WAIT_MS,
    )
    await expert.mouse.up()
    await expect(ptt).to_have_attribute("aria-pressed", "false")
    assert await expert.evaluate("() => window.orbridge.media.micTrack().enabled") is False
    sources = await expert.evaluate(
        "() => window.orbridge.media.session.published.map((t) => t.source)"
    )
    assert sources == ["microphone"]
    # Space works too, and the OR receives the voice
    await expert.locator("body").focus()
    await expert.keyboard.down("Space")
    await expert.wait_for_function(
        "() => window.orbridge.media.micTrack().enabled", timeout=WAIT_MS
    )
    await expert.keyboard.up("Space")
    assert await expert.evaluate("() => window.orbridge.media.micTrack().enabled") is False
    heard = 0
    for _ in range(40):
        heard = (await surgeon.evaluate("() => window.orbridge.media.session.audioStats()"))[
            "packetsReceived"
        ]
        if heard > 10:
            break
        await asyncio.sleep(0.25)
    assert heard > 10, "the OR did not receive the expert's microphone"

    # the video delay is measured and shown with a level
    latency = expert.get_by_test_id("latency")
    await expect(latency).to_have_attribute("data-level", "ok", timeout=WAIT_MS)
    ms = await latency.get_attribute("data-ms")
    assert ms is not None and 0 <= int(ms) < 300
    # the OR's keys: M mutes its microphone
    await surgeon.keyboard.press("m")
    await expect(surgeon.get_by_test_id("mute")).to_have_attribute("aria-pressed", "true")
    await surgeon.keyboard.press("m")
    await expect(surgeon.get_by_test_id("mute")).to_have_attribute("aria-pressed", "false")
