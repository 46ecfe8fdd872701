"""The recordings library and replay in headless Chromium, against recordings whose truth is
known (tests.recording.sample): the thumbnails load and the search filters; the arrow drawn on frame
45 appears on frame 45 and not on frame 44 (the presented frame read back from the <video> and
its timestamp code decoded); the vitals at an instant are the ones logged by then; 2x speed
runs twice as fast; chapters seek; the time math of replay-time.js is manifest.py's."""

from __future__ import annotations

import base64
import fractions
import json
import shutil
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from playwright.async_api import Page, expect

from orbridge.media.sim.timecode import read_timestamp
from orbridge.recording.live.writer import SegmentWriter
from orbridge.recording.manifest import Manifest, Segment, TrackEntry
from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from tests.browser.conftest import Pages, StartWebNode, WebNode
from tests.recording.sample import SampleAnnotation, SampleRecording, make_sample_recording
from tests.support import SECRET

pytestmark = pytest.mark.asyncio(loop_scope="session")

A = "or-1-20261122T080000Z-0001"
B = "or-2-20261123T080000Z-0002"
ANNOTATED = 45  # the sample's arrow is drawn on frame 45 and logged 400 ms later
ARROW = ((0.35, 0.35), (0.55, 0.55))
ARROW_RGB = (0x00, 0xE5, 0xFF)
ALONG_ARROW = [0.1, 0.25, 0.4, 0.55, 0.7]  # fractions of the shaft (the head starts later)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleRecording]:
    root = tmp_path_factory.mktemp("recordings")
    sample = make_sample_recording(root, A)  # 4 s, 30 fps, SpO2 97 then 88 at 2 s
    make_sample_recording(root, B, room="or-2", seconds=1.0, start_ms=1_795_090_000_000,
                          procedure="Appendectomy", hospital="Yushu Prefecture Hospital",
                          tags=("appendix",), consent="verbal")  # fmt: skip
    return root, sample


@pytest.fixture(scope="module")
def reconnected(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, SampleRecording, SampleRecording]:
    root = tmp_path_factory.mktemp("reconnected") / "recordings"
    root.mkdir()
    return root, *make_reconnected(root)


G = "or-5-20261124T080000Z-0005"  # two segments: the publisher reconnected after 2 s
G_START = 1_795_200_000_000
FIRST, SECOND = "laparoscope-surgeon-1-001.webm", "laparoscope-surgeon-1-002.webm"
VOICE = "microphone-expert-1-001.webm"


def write_tone(path: Path, start_ms: int, seconds: float) -> TrackEntry:
    """An expert's microphone: a 440 Hz tone in Opus, arriving 40 ms after capture."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "mono", "fltp"
    encoder.time_base = fractions.Fraction(1, 48000)
    writer = SegmentWriter(path, "OPUS", queue_size=int(seconds * 50) + 10)
    for index in range(int(seconds * 50)):  # 20 ms frames
        t = (np.arange(960) + index * 960) / 48000
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, index * 960
        frame.time_base = encoder.time_base
        for packet in encoder.encode(frame):
            arrival = start_ms + 40 + int(packet.pts) // 48
            writer.write_data(bytes(packet), int(packet.pts), True, arrival)
    info = writer.close_sync()
    segment = Segment.from_json({**info.to_json(), "file": path.name, "track_id": "TR_voice0001"})
    return TrackEntry("microphone-expert-1", "expert-1", "microphone", "audio", "OPUS",
                      segments=[segment])  # fmt: skip


def make_reconnected(root: Path) -> tuple[SampleRecording, SampleRecording]:
    """A recording whose laparoscope stopped for a second: segment 1 (2 s, an arrow on its
    frame 15), a 1 s gap, segment 2 (1 s, a new track id, a magenta arrow on its frame 12)."""
    work = root.parent / "parts"
    one = make_sample_recording(work, "one", room="or-5", seconds=2.0, start_ms=G_START,
                                annotations=(SampleAnnotation(frame=15),))  # fmt: skip
    two = make_sample_recording(work, "two", room="or-5", seconds=1.0, start_ms=G_START + 3000,
                                annotations=(SampleAnnotation(frame=12, color="#ff00ff"),),
                                vitals=False)  # fmt: skip
    directory = root / G
    directory.mkdir()
    shutil.copy(one.directory / FIRST, directory / FIRST)
    shutil.copy(two.directory / FIRST, directory / SECOND)
    renamed = (two.directory / "events.jsonl").read_text()
    renamed = renamed.replace("TR_sample00001", "TR_sample00002").replace(FIRST, SECOND)
    events = [
        json.loads(line) for line in (one.directory / "events.jsonl").read_text().splitlines()
    ]
    events = [e for e in events if e["type"] != "recording_stopped"]
    events += [json.loads(line) for line in renamed.splitlines()]
    events = [e for e in events if e["type"] != "recording_started" or e["t"] == G_START]
    text = "".join(json.dumps(e) + "\n" for e in events)
    (directory / "events.jsonl").write_text(text)
    manifest = one.manifest
    manifest.id = G
    second = two.manifest.tracks[0].segments[0]
    second.file, second.track_id = SECOND, "TR_sample00002"
    manifest.tracks[0].segments.append(second)
    manifest.stopped_ms = two.manifest.stopped_ms
    manifest.tracks.append(write_tone(directory / VOICE, G_START, 4.0))
    manifest.save(directory)
    shutil.rmtree(work)
    return one, two


def library_token(role: Role = Role.TRAINEE, globs: tuple[str, ...] = ("or-*",), **kw: Any) -> str:
    return tokens.mint(SECRET, tokens.LIBRARY_ROOM, role, "Trainee Li", library=list(globs), **kw)


async def serve(start_web_node: StartWebNode, library: tuple[Path, SampleRecording]) -> WebNode:
    return await start_web_node(recordings_dir=library[0])


async def open_replay(pages: Pages, node: WebNode, token: str, recording: str = A) -> Page:
    page = await pages.new_page(f"{node.url}/recordings/{recording}#token={token}")
    await page.wait_for_function("() => window.orbridgeReplay && window.orbridgeReplay.ready")
    return page


def position_of_frame(sample: SampleRecording, frame: int) -> float:
    """Replay position (ms from the start) of a frame: its WebM time (whole ms) on the timeline."""
    segment = sample.manifest.tracks[0].segments[0]
    media = round(frame * 1000 / sample.fps) / 1000
    return segment.wall_ms(media) - sample.manifest.started_ms


# The presented frame (read back from the <video>) and the overlay's pixels along the arrow,
# in one go: both belong to the same presented frame.
GRAB_JS = """([along, a, b]) => {
  const video = document.querySelector('[data-testid="replay-video"]');
  const overlay = document.querySelector('[data-testid="replay-overlay"]');
  const frame = document.createElement("canvas");
  frame.width = video.videoWidth;
  frame.height = video.videoHeight;
  frame.getContext("2d").drawImage(video, 0, 0);
  const box = overlay.getBoundingClientRect();
  const s = Math.min(box.width / video.videoWidth, box.height / video.videoHeight);
  const w = video.videoWidth * s, h = video.videoHeight * s;
  const x0 = (box.width - w) / 2, y0 = (box.height - h) / 2;
  const dpr = overlay.width / box.width;
  const ctx = overlay.getContext("2d");
  const pixels = along.map((f) => {
    const x = a[0] + f * (b[0] - a[0]), y = a[1] + f * (b[1] - a[1]);
    return Array.from(ctx.getImageData(Math.round((x0 + x * w) * dpr),
                                       Math.round((y0 + y * h) * dpr), 1, 1).data);
  });
  return {png: frame.toDataURL("image/png"), pixels,
          ids: window.orbridgeReplay.visibleAnnotationIds(),
          frame: window.orbridgeReplay.frame()};
}"""


def is_arrow(pixel: list[int], rgb: tuple[int, int, int]) -> bool:
    return pixel[3] > 200 and all(abs(pixel[i] - rgb[i]) <= 12 for i in range(3))


async def grab(
    page: Page, position: float, rgb: tuple[int, int, int] = ARROW_RGB
) -> tuple[int, int, bool, dict[str, Any]]:
    """Seek; then (capture ms, frame number) of the presented frame, and whether the overlay
    shows the arrow (every sampled point in its colour; none of them if not)."""
    await page.evaluate("(ms) => window.orbridgeReplay.seek(ms)", position)
    got = await page.evaluate(GRAB_JS, [ALONG_ARROW, *ARROW])
    png = base64.b64decode(got["png"].split(",", 1)[1])
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    stamp = read_timestamp(image)
    assert stamp is not None, f"no timestamp code in the presented frame at {position} ms"
    shown = [is_arrow(p, rgb) for p in got["pixels"]]
    assert all(shown) or not any(shown), f"half an arrow at {position} ms: {got['pixels']}"
    assert bool(got["ids"]) == all(shown), got
    return stamp[0], stamp[1], all(shown), got


async def test_library_lists_searches_and_opens(
    start_web_node: StartWebNode,
    pages: Pages,
    library: tuple[Path, SampleRecording],
    artifacts: Path,
) -> None:
    node = await serve(start_web_node, library)
    token = library_token()
    page = await pages.new_page(tokens.library_url(node.url, token))
    cards = page.get_by_test_id("recording-card")
    await expect(cards).to_have_count(2)
    assert "token=" not in page.url  # taken out of the address bar
    await expect(cards.first).to_have_attribute("data-id", B)  # newest first
    await page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="thumbnail"]')]
                 .every((img) => img.complete && img.naturalWidth > 0)"""
    )
    assert await page.evaluate(
        "() => document.querySelector('[data-testid=\"thumbnail\"]').naturalWidth"
    ) == 320  # fmt: skip
    card = page.locator(f'[data-testid="recording-card"][data-id="{A}"]')
    await expect(card.get_by_test_id("card-title")).to_have_text("Laparoscopic cholecystectomy")
    await expect(card.get_by_test_id("card-hospital")).to_have_text(
        "Maduo County People's Hospital"
    )
    await expect(card.get_by_test_id("card-duration")).to_have_text("0:04")
    await expect(card.get_by_test_id("card-tag")).to_have_text(["cholecystectomy", "teaching"])
    await expect(card.get_by_test_id("card-consent")).to_have_count(0)  # a trainee's view
    await page.screenshot(path=artifacts / "library.png", full_page=True)
    # Search as you type, and each filter.
    await page.get_by_test_id("search-q").fill("yushu")
    await expect(cards).to_have_count(1)
    await expect(cards.first).to_have_attribute("data-id", B)
    await page.get_by_test_id("search-reset").click()
    await expect(cards).to_have_count(2)
    await page.get_by_test_id("filter-tag").fill("teaching")
    await expect(cards).to_have_count(1)
    await expect(cards.first).to_have_attribute("data-id", A)
    await page.get_by_test_id("filter-tag").fill("")
    await page.get_by_test_id("filter-procedure").fill("append")
    await expect(cards).to_have_count(1)
    await expect(cards.first).to_have_attribute("data-id", B)
    await page.get_by_test_id("filter-procedure").fill("")
    await page.get_by_test_id("filter-hospital").fill("nowhere")
    await expect(page.get_by_test_id("result-count")).to_have_text("No recordings match.")
    await page.get_by_test_id("filter-hospital").fill("")
    await page.get_by_test_id("filter-from").fill("2030-01-01")
    await expect(cards).to_have_count(0)
    await page.get_by_test_id("filter-from").fill("")
    await expect(cards).to_have_count(2)
    # Open one: the replay page gets the token in its fragment.
    await card.get_by_test_id("recording-link").click()
    await page.wait_for_url(f"**/recordings/{A}")
    await page.wait_for_function("() => window.orbridgeReplay && window.orbridgeReplay.ready")
    await expect(page.get_by_test_id("replay-title")).to_have_text("Laparoscopic cholecystectomy")


async def test_library_consent_badge_and_access_messages(
    start_web_node: StartWebNode, pages: Pages, library: tuple[Path, SampleRecording]
) -> None:
    node = await serve(start_web_node, library)
    moderator = library_token(Role.MODERATOR, ("or-1",))
    page = await pages.new_page(tokens.library_url(node.url, moderator))
    await expect(page.get_by_test_id("recording-card")).to_have_count(1)
    await expect(page.get_by_test_id("card-consent")).to_have_text("Written consent")
    # No token, an expired one, another room's recording: said in words.
    page = await pages.new_page(f"{node.url}/recordings")
    await expect(page.get_by_test_id("token-form")).to_be_visible()
    await expect(page.get_by_test_id("error-code")).to_have_text("token_missing")
    expired = library_token(ttl_s=10, now=time.time() - 100)
    page = await pages.new_page(tokens.library_url(node.url, expired))
    await expect(page.get_by_test_id("error-code")).to_have_text("token_expired")
    await expect(page.get_by_test_id("error-message")).to_contain_text("expired")
    other = tokens.mint(SECRET, "or-2", Role.TRAINEE, "T")
    page = await pages.new_page(f"{node.url}/recordings/{A}#token={other}")
    await expect(page.get_by_test_id("error-code")).to_have_text("forbidden")
    await expect(page.get_by_test_id("replay-console")).to_be_hidden()


async def test_replay_draws_the_arrow_on_its_frame(
    start_web_node: StartWebNode, pages: Pages, library: tuple[Path, SampleRecording]
) -> None:
    sample = library[1]
    node = await serve(start_web_node, library)
    page = await open_replay(pages, node, tokens.mint(SECRET, "or-1", Role.TRAINEE, "T"))
    at = position_of_frame(sample, ANNOTATED)
    truth = sample.capture_ms(ANNOTATED)
    # On the annotated frame: the arrow, and the frame is the one it was drawn on.
    capture, frame_no, shown, got = await grab(page, at)
    assert shown, f"no arrow on the annotated frame ({frame_no}, {got['frame']})"
    assert capture >= truth and frame_no == ANNOTATED
    assert got["ids"] == sample.annotation_ids
    # One frame earlier: no arrow (the drawing appears to within one frame: here, exactly).
    capture, frame_no, shown, _ = await grab(page, position_of_frame(sample, ANNOTATED - 1))
    assert not shown and capture < truth and frame_no == ANNOTATED - 1
    # Around it, seeking anywhere between frames: the arrow shows exactly from frame 45.
    seen = []
    for offset in range(-80, 81, 16):
        capture, frame_no, shown, _ = await grab(page, at + offset)
        assert shown == (capture >= truth), (offset, frame_no, shown)
        seen.append((frame_no, shown))
    assert {s for _, s in seen} == {True, False}, seen
    # It stays to the end (never removed); before its frame, nothing at all.
    assert (await grab(page, 3900))[2]
    assert not (await grab(page, 200))[2]


async def test_replay_vitals_speed_chapters_and_keys(
    start_web_node: StartWebNode,
    pages: Pages,
    library: tuple[Path, SampleRecording],
    artifacts: Path,
) -> None:
    node = await serve(start_web_node, library)
    page = await open_replay(pages, node, library_token())
    spo2 = page.get_by_test_id("vitals-spo2")
    await page.evaluate("() => window.orbridgeReplay.seek(1000)")
    await expect(spo2).to_have_text("97")
    await expect(page.get_by_test_id("vitals-hr")).to_have_text("72")
    await page.evaluate("() => window.orbridgeReplay.seek(3000)")
    await expect(spo2).to_have_text("88")
    await page.evaluate("() => window.orbridgeReplay.seek(1990)")  # logged at 2005 ms
    await expect(spo2).to_have_text("97")
    await page.evaluate("() => window.orbridgeReplay.seek(2010)")
    await expect(spo2).to_have_text("88")
    # The ECG strip draws the samples logged before this instant (green on black).
    await page.wait_for_function(
        """() => {
            const c = document.querySelector('[data-testid="ecg-strip"]');
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            for (let i = 0; i < d.length; i += 4) if (d[i + 1] > 200 && d[i] < 120) return true;
            return false;
        }"""
    )
    # Chapters: listed, marked on the seek bar, and a click seeks there.
    chapter = page.get_by_test_id("chapter")
    await expect(chapter).to_have_text(["0:01 Calot's triangle"])
    await expect(page.get_by_test_id("chapter-mark")).to_have_count(1)
    await page.evaluate("() => window.orbridgeReplay.seek(3500)")
    await chapter.click()
    await page.wait_for_function("() => Math.abs(window.orbridgeReplay.timelineMs() - 1000) < 40")
    # 2x speed: the timeline runs about twice as fast as the wall clock.
    await page.get_by_test_id("speed").select_option("2")
    rate = await page.evaluate(
        """async () => {
            const r = window.orbridgeReplay;
            await r.seek(200);
            r.play();
            await new Promise((ok) => setTimeout(ok, 300));  // running steadily
            const t0 = r.timelineMs(), p0 = performance.now();
            await new Promise((ok) => setTimeout(ok, 700));
            const t1 = r.timelineMs(), p1 = performance.now();
            r.pause();
            return (t1 - t0) / (p1 - p0);
        }"""
    )
    assert 1.5 < rate < 2.6, rate
    await expect(page.get_by_test_id("speed")).to_have_value("2")
    # Space plays and pauses (unless a form field has the key: the speed list here).
    await page.evaluate("() => window.orbridgeReplay.seek(500)")
    await page.evaluate("() => document.activeElement.blur()")
    await page.keyboard.press("Space")
    await page.wait_for_function("() => window.orbridgeReplay.playing()")
    await expect(page.get_by_test_id("play")).to_have_text("Pause")
    await page.keyboard.press("Space")
    await page.wait_for_function("() => !window.orbridgeReplay.playing()")
    await expect(page.get_by_test_id("participants").locator("li")).to_have_count(2)
    await page.evaluate("() => window.orbridgeReplay.seek(2500)")
    await page.screenshot(path=artifacts / "replay.png", full_page=True)
    assert not pages.console_errors, pages.console_errors


async def test_replay_through_a_reconnection(
    start_web_node: StartWebNode,
    pages: Pages,
    reconnected: tuple[Path, SampleRecording, SampleRecording],
) -> None:
    root, one, two = reconnected
    node = await start_web_node(recordings_dir=root)
    page = await open_replay(pages, node, library_token(globs=("or-5",)), G)
    hook = "window.orbridgeReplay"
    # In the gap: no picture, says why, no drawings.
    await page.evaluate(f"() => {hook}.seek(2500)")
    await expect(page.get_by_test_id("gap")).to_have_text("No video: publisher reconnecting")
    await expect(page.get_by_test_id("replay-video")).to_be_hidden()
    assert await page.evaluate(f"() => {hook}.visibleAnnotationIds()") == []
    # Each segment shows its own track's drawings only, from their frames.
    first_arrow = position_of_frame(one, 15)
    assert await page.evaluate(f"(ms) => {hook}.seek(ms).then({hook}.visibleAnnotationIds)",
                               first_arrow) == one.annotation_ids  # fmt: skip
    await expect(page.get_by_test_id("gap")).to_be_hidden()
    second = two.manifest.tracks[0].segments[0]
    second_arrow = second.wall_ms(0.4) - G_START  # its frame 12
    before_it = second.wall_ms(0.367) - G_START  # its frame 11 (WebM: whole ms)
    capture, frame_no, shown, got = await grab(page, second_arrow, (0xFF, 0x00, 0xFF))
    assert shown
    assert got["frame"]["file"] == SECOND and got["ids"] == two.annotation_ids
    assert (capture, frame_no) == (two.capture_ms(12), 12)
    capture, frame_no, shown, got = await grab(page, before_it, (0xFF, 0x00, 0xFF))
    assert not shown
    assert got["ids"] == [] and frame_no == 11
    # Played through: the clock runs on through the gap into the next segment.
    trace = await page.evaluate(
        """async () => {
            const r = window.orbridgeReplay;
            await r.seek(1700);
            r.setRate(2);
            r.play();
            const seen = [];
            const until = performance.now() + 5000;
            while (performance.now() < until) {
                const f = r.frame();
                seen.push([r.timelineMs(), r.gap(), f && f.file]);
                if (f && f.file.endsWith("-002.webm") && r.timelineMs() > 3300) break;
                await new Promise((ok) => setTimeout(ok, 40));
            }
            r.pause();
            return seen;
        }"""
    )
    times = [t for t, _, _ in trace]
    assert times == sorted(times), "the timeline went backwards"
    assert any(g == "between" and 2100 < t < 2950 for t, g, _ in trace), trace
    assert trace[-1][2] == SECOND and trace[-1][0] > 3300, trace[-1]


async def test_replay_audio_follows_the_timeline(
    start_web_node: StartWebNode,
    pages: Pages,
    reconnected: tuple[Path, SampleRecording, SampleRecording],
) -> None:
    root, _, _ = reconnected
    voice = Manifest.load(root / G).track("microphone-expert-1")
    assert voice is not None
    segment = voice.segments[0]
    node = await start_web_node(recordings_dir=root)
    page = await open_replay(pages, node, library_token(globs=("or-5",)), G)
    audio = page.get_by_test_id("replay-audio")
    await expect(audio).to_have_count(1)
    await expect(audio).to_have_attribute("data-track", "microphone-expert-1")
    await page.evaluate("() => window.orbridgeReplay.seek(800)")
    await page.get_by_test_id("play").click()  # a click: the browser lets sound play
    samples = await page.evaluate(
        """async () => {
            const r = window.orbridgeReplay;
            const el = document.querySelector('[data-testid="replay-audio"]');
            const out = [];
            for (let i = 0; i < 12; i++) {
                await new Promise((ok) => setTimeout(ok, 100));
                out.push([r.timelineMs(), el.currentTime, el.paused]);
            }
            return out;
        }"""
    )
    await page.get_by_test_id("play").click()
    await expect(page.get_by_test_id("audio-hint")).to_be_hidden()
    steady = samples[4:]  # the first sync may take a moment
    assert not any(paused for _, _, paused in steady), samples
    for timeline, current, _ in steady:
        want = segment.media_time(G_START + timeline)
        assert abs(current - want) < 0.3, (timeline, current, want)
    await page.wait_for_function(
        "() => document.querySelector('[data-testid=\"replay-audio\"]').paused"
    )


async def test_replay_time_math_is_the_manifests(web_node: WebNode, pages: Pages) -> None:
    """replay-time.js mirrors recording/manifest.py, sync points and all."""
    segment = Segment(
        "f.webm", "TR_1", "VP8", 90000, first_arrival_ms=1_000_000, first_ts=450_000,
        duration=35.0, sync_points=[[0.0, 1_000_000], [10.0, 1_010_040], [20.0, 1_019_990],
                                    [30.0, 1_030_000]],
    )  # fmt: skip
    medias = [0.0, 0.5, 9.99, 10.0, 15.0, 25.0, 30.0, 34.5]
    walls = [999_000.0, 1_000_000.0, 1_005_000.0, 1_010_040.0, 1_015_000.0, 1_031_000.0]
    page = await pages.new_page(web_node.url + "/")
    got = await page.evaluate(
        """async ([seg, medias, walls]) => {
            const T = await import('/static/js/replay-time.js');
            return {wall: medias.map((m) => T.wallMs(seg, m)),
                    media: walls.map((w) => T.mediaTime(seg, w)),
                    ts: T.mediaTimeOfTs(seg, 450000 + 90000 * 12.5),
                    end: T.segmentEnd(seg)};
        }""",
        [segment.to_json(), medias, walls],
    )
    assert got["wall"] == pytest.approx([segment.wall_ms(m) for m in medias])
    assert got["media"] == pytest.approx([segment.media_time(w) for w in walls])
    assert got["ts"] == pytest.approx(segment.media_time_of_ts(450_000 + 90_000 * 12 + 45_000))
    assert got["end"] == pytest.approx(segment.end_ms)
    manifest = Manifest("r-1", "r", 999_000, stopped_ms=None)
    assert manifest.end_ms == 999_000
