"""Issue #6's "done when", end to end: `orbridge serve --demo` runs a synthetic operation; the
moderator from its printed link records it while an expert draws on a frame and the synthetic
patient's vitals flow; the recording appears in the library the demo prints, and Chromium
replays it with the drawing on the very frame it was drawn on and the vitals of that moment."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from playwright.async_api import expect

from orbridge.media.sim.timecode import read_timestamp
from orbridge.recording.eventlog import read_events
from orbridge.recording.manifest import Manifest
from orbridge.rooms.annotations.model import color_for
from orbridge.signaling.cli.client import RoomClient
from tests.browser.conftest import Pages
from tests.browser.test_replay import GRAB_JS, is_arrow
from tests.e2e.test_live_recording import Expert
from tests.e2e.test_sfu import until
from tests.support import ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="session")

ARROW = ([0.3, 0.3], [0.6, 0.6])  # as tests.e2e.test_live_recording.Expert draws it


def decode_all(path: Path) -> tuple[int, float]:
    """Decode every frame of the file's stream (errors raise): (frames, end time in s)."""
    frames, end = 0, 0.0
    with av.open(str(path)) as container:
        stream = container.streams[0]
        for packet in container.demux(stream):
            frames += len(packet.decode())
            if packet.pts is not None and packet.duration:
                end = max(end, float((packet.pts + packet.duration) * stream.time_base))
    return frames, end


def link(log: str, label: str) -> str:
    return next(line.split()[-1] for line in log.splitlines() if line.strip().startswith(label))


async def test_a_demo_session_is_recorded_and_replayed(tmp_path: Path, pages: Pages) -> None:
    server = await asyncio.to_thread(
        ServerProcess, "--demo", "--data-dir", str(tmp_path), secret=None
    )
    try:
        async with asyncio.timeout(30):
            while "recordings library" not in server.log():  # noqa: ASYNC110 - a log file
                await asyncio.sleep(0.2)
        log = server.log()
        moderator = RoomClient(server.url, link(log, "moderator (").split("#token=")[1])
        await moderator.connect(room="demo")
        snapshot = await moderator.join()
        if not snapshot["tracks"]:
            await moderator.next_event("track_published", wait=20)
        expert = Expert(RoomClient(server.url, link(log, "expert (").split("#token=")[1]))
        await expert.room.connect(room="demo")
        await expert.room.join()
        started = await moderator.request(
            "start_recording",
            {"consent": "not_required", "procedure": "Demo cholecystectomy",
             "hospital": "Demo County Hospital", "tags": ["demo"]},
        )  # fmt: skip
        await expert.media.subscribe(expert.consume)
        await until(lambda: expert.drawn is not None, within=30)
        await asyncio.sleep(2.0)
        await moderator.request("stop_recording", {})
        await expert.media.close()
        await expert.room.close()
        await moderator.close()

        directory = tmp_path / "recordings" / started["id"]
        manifest = Manifest.load(directory)
        assert manifest.state == "complete"
        assert {t.source for t in manifest.tracks} == {"laparoscope", "microphone"}
        for track in manifest.tracks:  # every file decodes completely, as long as it says
            for segment in track.segments:
                decoded, end = await asyncio.to_thread(decode_all, directory / segment.file)
                assert decoded > 0 and segment.duration is not None and segment.closed
                assert abs(end - segment.duration) < 0.05, (segment.file, end, segment.duration)
        events = read_events(directory / "events.jsonl")
        [drawn] = [e["annotation"] for e in events if e["type"] == "annotation"]
        video = manifest.main_video()
        assert video is not None
        segment = next(s for s in video.segments if s.track_id == drawn["track_id"])
        media_time = segment.media_time_of_ts(drawn["frame"]["source_ts"])
        assert media_time is not None
        position = segment.wall_ms(round(media_time * 1000) / 1000) - manifest.started_ms

        # The library the demo printed lists it; it opens in the replay page.
        page = await pages.new_page(link(log, "recordings library"))
        card = page.locator(f'[data-testid="recording-card"][data-id="{started["id"]}"]')
        await expect(card.get_by_test_id("card-title")).to_have_text("Demo cholecystectomy")
        await page.wait_for_function(
            """() => [...document.querySelectorAll('[data-testid="thumbnail"]')]
                     .every((img) => img.complete && img.naturalWidth > 0)"""
        )
        await card.get_by_test_id("recording-link").click()
        await page.wait_for_function("() => window.orbridgeReplay && window.orbridgeReplay.ready")

        color = color_for(drawn["author"])
        rgb = (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))

        async def grab(at: float) -> tuple[int, bool]:
            await page.evaluate("(ms) => window.orbridgeReplay.seek(ms)", at)
            got = await page.evaluate(GRAB_JS, [[0.15, 0.3, 0.45, 0.6], *ARROW])
            png = base64.b64decode(got["png"].split(",", 1)[1])
            stamp = read_timestamp(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR))
            assert stamp is not None, f"no timestamp code in the presented frame at {at} ms"
            shown = [is_arrow(p, rgb) for p in got["pixels"]]
            assert all(shown) or not any(shown), got["pixels"]
            return stamp[0], all(shown)

        # the drawing appears on the frame the expert drew on, and not one frame before
        capture, shown = await grab(position)
        assert shown and capture == expert.drawn["capture_ms"]
        capture, shown = await grab(position - 1000 / 30)
        assert not shown and capture < expert.drawn["capture_ms"]
        # the vitals shown are the synthetic patient's latest before that instant
        wall = manifest.started_ms + position
        logged = {}
        for event in events:
            if event["type"] == "vitals" and event["t"] <= wall:
                logged.update({n["kind"]: n["value"] for n in event["batch"]["numerics"]})
        shown_vitals = await page.evaluate("() => window.orbridgeReplay.shownNumerics()")
        assert logged and {k: shown_vitals.get(k) for k in logged} == logged, (
            json.dumps(shown_vitals),
            json.dumps(logged),
        )
        await expect(page.get_by_test_id("vitals-spo2")).not_to_be_empty()
    finally:
        assert await asyncio.to_thread(server.terminate) == 0
        await asyncio.to_thread(server.stop)
