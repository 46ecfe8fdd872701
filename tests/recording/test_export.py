"""Export (`orbridge recordings export`): real sample recordings in, H.264 MP4s out, pixels checked.

The sample recordings come from the synthetic laparoscope, whose truth is known: the frame an
annotation was drawn on, the capture time of every frame (its timestamp code), where the fake
patient banner is and when the scope is "withdrawn".
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from orbridge.media.sim.scene import BANNER_RECT, SyntheticScene, banner_rect
from orbridge.media.sim.timecode import read_timestamp
from orbridge.recording.eventlog import read_events
from orbridge.recording.export.deidentify import (
    ENTER_OUT,
    EXIT_OUT,
    OutOfBodyDetector,
    in_body_score,
    mask_regions,
    region_pixels,
)
from orbridge.recording.export.exporter import ExportInputError, ExportOptions, export_recording
from orbridge.recording.export.progress import ProgressBar
from orbridge.recording.export.render import ECG_COLOR, VitalsTimeline, draw_annotation, parse_color
from orbridge.recording.export.schedule import Schedule, schedule_annotations
from orbridge.recording.manifest import Segment
from tests.recording.sample import SampleAnnotation, SampleRecording, make_sample_recording

W, H, FPS, SECONDS = 640, 360, 30, 4.0
FRAMES = int(SECONDS * FPS)
ARROW = ((0.35, 0.35), (0.55, 0.55))  # the sample's default arrow, drawn on frame 45
ARROW_FRAME = 45
REMOVED_FRAME = 90  # the test logs its removal at this frame's arrival
CYAN = parse_color("#00e5ff")
ID_A = "or-1-20261122T080000Z-0001"
ID_B = "or-1-20261122T090000Z-0002"
ID_C = "or-1-20261122T100000Z-0003"


@dataclass
class Decoded:
    codec: str = ""
    duration: float = 0.0
    size: tuple[int, int] = (0, 0)
    times: list[float] = field(default_factory=list)
    frames: dict[int, np.ndarray] = field(default_factory=dict)
    stats: list[dict[str, Any]] = field(default_factory=list)


def decode(
    path: Path, keep: Collection[int] = (), stat: Callable[[np.ndarray], Any] | None = None
) -> Decoded:
    """Decode every frame (errors raise); keep some, and compute ``stat(image)`` of all."""
    out = Decoded()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        out.codec = stream.codec_context.name
        out.duration = (container.duration or 0) / 1_000_000
        for index, frame in enumerate(container.decode(stream)):
            image = frame.to_ndarray(format="bgr24")
            out.size = (frame.width, frame.height)
            out.times.append(float(frame.time or 0.0))
            if index in keep:
                out.frames[index] = image
            if stat is not None:
                out.stats.append(stat(image))
    return out


def source_file(sample: SampleRecording) -> Path:
    return sample.directory / sample.manifest.tracks[0].segments[0].file


def arrow_coverage(image: np.ndarray, arrow: tuple[tuple[float, float], ...] = ARROW) -> float:
    """Fraction of points along the arrow (tail to head) with the arrow's colour nearby."""
    (x0, y0), (x1, y1) = arrow
    hits = 0
    samples = np.linspace(0.05, 0.95, 30)
    for f in samples:
        x, y = round((x0 + f * (x1 - x0)) * W), round((y0 + f * (y1 - y0)) * H)
        patch = image[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).astype(int)
        distance = np.abs(patch - np.array(CYAN)).max(axis=1)
        hits += bool((distance < 60).any())
    return hits / len(samples)


def centre_sharpness(image: np.ndarray) -> float:
    """Laplacian variance of the scope's centre (no banner, no code, no vitals strip)."""
    crop = cv2.cvtColor(
        image[int(0.3 * H) : int(0.7 * H), int(0.35 * W) : int(0.65 * W)], cv2.COLOR_BGR2GRAY
    )
    return float(cv2.Laplacian(crop, cv2.CV_64F).var())


def banner_stats(image: np.ndarray) -> tuple[int, float]:
    x, y, w, h = banner_rect(W, H)
    region = cv2.cvtColor(image[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY)
    return int(region.max()), float(region.std())


# --- fixtures: two sample recordings and their exports ----------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recordings")


@pytest.fixture(scope="module")
def sample_a(root: Path) -> SampleRecording:
    """The default arrow on frame 45 (logged 400 ms later), removed at frame 90's arrival."""
    sample = make_sample_recording(root, ID_A, seconds=SECONDS, fps=FPS, width=W, height=H)
    removal = {
        "t": sample.capture_ms(REMOVED_FRAME) + sample.arrival_delay_ms,
        "type": "annotation_removed",
        "ids": sample.annotation_ids[:1],
        "by": "expert-1",
        "reason": "undo",
    }
    with open(sample.directory / "events.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps(removal) + "\n")
    return sample


@pytest.fixture(scope="module")
def sample_b(root: Path) -> SampleRecording:
    """Scope out of the body from 2 s to 3 s; no annotations."""
    return make_sample_recording(
        root,
        ID_B,
        seconds=SECONDS,
        fps=FPS,
        width=W,
        height=H,
        annotations=(),
        vitals=False,
        out_of_body_every=2,
        out_of_body_seconds=1,
    )


@pytest.fixture(scope="module")
def burned(
    root: Path, sample_a: SampleRecording, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Decoded, list[tuple[int, int]]]:
    out = tmp_path_factory.mktemp("out") / "burned.mp4"
    calls: list[tuple[int, int]] = []
    result = export_recording(
        root,
        ID_A,
        out,
        ExportOptions(burn_in=True),
        progress=lambda done, total: calls.append((done, total)),
    )
    keep = {0, ARROW_FRAME - 1, ARROW_FRAME, REMOVED_FRAME - 1, REMOVED_FRAME, FRAMES - 1}
    decoded = decode(out, keep, lambda image: arrow_coverage(image[:H]))
    assert result.report_path == out.with_name("burned.mp4.report.json")
    return json.loads(result.report_path.read_text()), decoded, calls


@pytest.fixture(scope="module")
def deidentified(
    root: Path, sample_b: SampleRecording, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Decoded]:
    out = tmp_path_factory.mktemp("out") / "deid.mp4"
    options = ExportOptions(deidentify=True, regions=[BANNER_RECT], regions_source="flags")
    result = export_recording(root, ID_B, out, options)
    decoded = decode(out, stat=lambda image: (banner_stats(image), centre_sharpness(image)))
    return result.report, decoded


# --- the MP4 ---------------------------------------------------------------------------


def test_output_is_complete_h264_at_the_source_timing(
    sample_a: SampleRecording, burned: tuple[dict[str, Any], Decoded, Any]
) -> None:
    report, out, calls = burned
    source = decode(source_file(sample_a))
    assert out.codec == "h264"
    assert len(out.times) == len(source.times) == FRAMES == report["frames"]
    assert out.times == pytest.approx(source.times, abs=0.002)
    assert out.duration == pytest.approx(SECONDS, abs=0.02)
    assert report["duration"] == pytest.approx(sample_a.manifest.tracks[0].duration, abs=0.02)
    assert out.size[0] == W and out.size[0] % 2 == 0 and out.size[1] % 2 == 0
    assert calls[-1] == (FRAMES, FRAMES)  # the progress callback saw every frame
    assert [c[0] for c in calls] == list(range(1, FRAMES + 1))


def test_arrow_is_burned_in_from_its_frame_not_its_arrival(
    sample_a: SampleRecording, burned: tuple[dict[str, Any], Decoded, Any]
) -> None:
    report, out, _ = burned
    coverage = out.stats
    assert coverage[ARROW_FRAME] >= 0.9, coverage[ARROW_FRAME]
    assert coverage[ARROW_FRAME - 1] <= 0.1, coverage[ARROW_FRAME - 1]
    first = next(i for i, c in enumerate(coverage) if c >= 0.9)
    assert first == ARROW_FRAME
    # The picture itself says which capture instant the first arrow frame shows.
    code = read_timestamp(out.frames[ARROW_FRAME][:H])
    assert code == (sample_a.capture_ms(ARROW_FRAME), ARROW_FRAME)
    # Logged 400 ms after its frame: arrival-based placement would start 12 frames later.
    event = next(
        e for e in read_events(sample_a.directory / "events.jsonl") if e["type"] == "annotation"
    )
    assert event["t"] - sample_a.capture_ms(ARROW_FRAME) >= 400
    assert report["annotations"] == {"drawn": 1, "by_type": {"arrow": 1}}


def test_removed_annotation_disappears(burned: tuple[dict[str, Any], Decoded, Any]) -> None:
    _, out, _ = burned
    coverage = out.stats
    assert all(c >= 0.9 for c in coverage[ARROW_FRAME:REMOVED_FRAME])
    assert all(c <= 0.1 for c in coverage[REMOVED_FRAME:])
    assert all(c <= 0.1 for c in coverage[:ARROW_FRAME])


def test_vitals_strip_under_the_picture(
    sample_a: SampleRecording, burned: tuple[dict[str, Any], Decoded, Any]
) -> None:
    report, out, _ = burned
    assert report["vitals"]["strip"] is True
    strip_h = report["vitals"]["strip_height"]
    assert out.size == (W, H + strip_h) and strip_h >= 48
    last = out.frames[FRAMES - 1]
    strip = last[H:].astype(int)
    green = (np.abs(strip - np.array(ECG_COLOR)).max(axis=2) < 70).sum()
    assert green > 200, green  # the ECG trace (and the HR value) in monitor green
    # The picture above the strip is untouched by it: the code still reads.
    assert read_timestamp(last[:H]) == (sample_a.capture_ms(FRAMES - 1), FRAMES - 1)
    # The trace moves: a second later the strip differs.
    assert np.abs(out.frames[FRAMES - 1][H:].astype(int) - out.frames[0][H:]).max() > 100


def test_segments_in_timeline_order_each_with_its_own_annotations(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The surgeon republished 3 s after a 2 s segment: a new file and a new track id."""
    other = (ARROW[1], (0.75, 0.35))
    first = make_sample_recording(
        root, ID_C, seconds=2, width=W, height=H, vitals=False, annotations=(SampleAnnotation(15),)
    )
    second = make_sample_recording(
        tmp_path_factory.mktemp("second"),
        ID_C,
        seconds=2,
        width=W,
        height=H,
        vitals=False,
        start_ms=first.start_ms + 5000,
        annotations=(SampleAnnotation(15, points=other),),
    )
    segment = second.manifest.tracks[0].segments[0]
    shutil.copy(second.directory / segment.file, first.directory / "laparoscope-surgeon-1-002.webm")
    segment.file, segment.track_id = "laparoscope-surgeon-1-002.webm", "TR_sample00002"
    first.manifest.tracks[0].segments.append(segment)
    first.manifest.stopped_ms = second.manifest.stopped_ms
    first.manifest.save(first.directory)
    with open(first.directory / "events.jsonl", "a", encoding="utf-8") as log:
        for event in read_events(second.directory / "events.jsonl"):
            if event["type"] == "annotation":
                event["annotation"].update(track_id="TR_sample00002", id="AN_second")
                log.write(json.dumps(event) + "\n")

    out = tmp_path_factory.mktemp("out") / "two.mp4"
    report = export_recording(root, ID_C, out, ExportOptions(burn_in=True)).report
    decoded = decode(out, stat=lambda image: (arrow_coverage(image), arrow_coverage(image, other)))
    assert len(decoded.times) == 120 and [s["frames"] for s in report["segments"]] == [60, 60]
    assert decoded.times[59] == pytest.approx(59 / 30, abs=0.002)
    assert decoded.times[60] == pytest.approx(5.0, abs=0.002)  # the gap is kept
    assert decoded.duration == pytest.approx(7.0, abs=0.02)
    one = [c[0] >= 0.9 for c in decoded.stats]
    two = [c[1] >= 0.9 for c in decoded.stats]
    assert one == [15 <= i < 60 for i in range(120)]
    assert two == [i >= 75 for i in range(120)]
    assert report["annotations"]["drawn"] == 2


def test_vitals_timeline_latest_numeric_and_trace_window(sample_a: SampleRecording) -> None:
    timeline = VitalsTimeline(read_events(sample_a.directory / "events.jsonl"))
    early = timeline.at(sample_a.capture_ms(30))
    late = timeline.at(sample_a.capture_ms(FRAMES - 1))
    assert early.numerics["hr"] == 72 and early.numerics["spo2"] == 97
    assert late.numerics["spo2"] == 88  # the sample's desaturation in its second half
    assert late.numerics["nibp_sys"] is None
    assert late.trace_kind == "ecg_ii"
    assert late.trace_t.min() >= -4000 and late.trace_t.max() <= 0
    assert late.trace_t.max() - late.trace_t.min() > 3500
    assert np.all(np.diff(late.trace_t) > 0)
    before = timeline.at(sample_a.start_ms - 60_000)
    assert before.trace_kind is None and before.numerics["hr"] is None


# --- de-identification -----------------------------------------------------------------


def test_deidentify_masks_the_patient_banner(
    sample_b: SampleRecording, deidentified: tuple[dict[str, Any], Decoded]
) -> None:
    report, out = deidentified
    source = decode(source_file(sample_b), stat=banner_stats)
    assert len(out.stats) == len(source.stats) == FRAMES
    assert all(peak > 200 for peak, _ in source.stats)  # white text in the source
    for index, ((peak, std), _) in enumerate(out.stats):
        assert peak < 40 and std < 4, (index, peak, std)
    deid = report["deidentify"]
    assert deid["regions"] == [list(BANNER_RECT)] and deid["regions_source"] == "flags"
    x, y, w, h = deid["region_pixels"][0]
    bx, by, bw, bh = banner_rect(W, H)
    assert x <= bx and y <= by and x + w >= bx + bw and y + h >= by + bh
    assert deid["warnings"] == []


def test_deidentify_blurs_out_of_body_frames(
    sample_b: SampleRecording, deidentified: tuple[dict[str, Any], Decoded]
) -> None:
    report, out = deidentified
    scene = SyntheticScene(W, H, out_of_body_every=2, out_of_body_seconds=1)
    truth = [scene.is_out_of_body(i / FPS) for i in range(FRAMES)]
    source = decode(source_file(sample_b), stat=centre_sharpness)
    for index, (_, sharp) in enumerate(out.stats):
        if truth[index]:
            assert sharp < 0.05 * source.stats[index], (index, sharp, source.stats[index])
        else:
            assert sharp > 0.5 * source.stats[index], (index, sharp, source.stats[index])
    deid = report["deidentify"]
    first, last = truth.index(True), len(truth) - 1 - truth[::-1].index(True)
    (only,) = deid["out_of_body_ranges"]
    assert abs(only["first_frame"] - first) <= 1 and abs(only["last_frame"] - last) <= 1
    assert only["start"] == pytest.approx(first / FPS, abs=0.07)
    assert only["end"] == pytest.approx((last + 1) / FPS, abs=0.07)
    assert deid["out_of_body_frames"] == sum(truth)
    assert deid["frames"] == FRAMES


def test_out_of_body_score_separates_synthetic_frames() -> None:
    for width, height in ((640, 360), (1280, 720), (480, 360)):
        scene = SyntheticScene(width, height, out_of_body_every=5, out_of_body_seconds=3)
        for t in (0.0, 1.3, 4.1, 10.2, 31.0, 5.0, 6.4, 7.9, 15.5, 62.0):
            score = in_body_score(scene.render(t, 0, 0))
            assert score is not None
            if scene.is_out_of_body(t):
                assert score < ENTER_OUT / 2, (width, t, score)
            else:
                assert score > EXIT_OUT + 0.3, (width, t, score)
    assert in_body_score(np.zeros((H, W, 3), np.uint8)) is None  # too dark to tell


def test_out_of_body_detector_hysteresis_and_gaps() -> None:
    detector = OutOfBodyDetector(gap_frames=3)
    decisions: list[bool] = []
    # in, out, a 2-frame in-body flicker (filled), out, a dark frame, in for good
    for score in (0.9, 0.9, 0.1, 0.1, 0.8, 0.8, 0.1, None, 0.35, 0.9, 0.9, 0.9, 0.9):
        decisions += detector.push(score)
    decisions += detector.flush()
    assert decisions == [False, False] + [True] * 7 + [False] * 4


def test_mask_regions_cover_fractions_outwards() -> None:
    image = np.full((H, W, 3), 255, np.uint8)
    region = (0.1001, 0.2001, 0.2, 0.1)
    mask_regions(image, [region])
    x, y, w, h = region_pixels(region, W, H)
    assert (x, y) == (64, 72) and x + w >= 0.3001 * W and y + h >= 0.3001 * H
    assert image[y : y + h, x : x + w].max() == 0
    assert image.mean() > 200


# --- schedule and drawing -----------------------------------------------------------------


def _annotation(aid: str, kind: str = "arrow", track: str = "TR_1", **extra: Any) -> dict[str, Any]:
    points = [[0.5, 0.5]] if kind == "pointer" else [[0.2, 0.2], [0.4, 0.4]]
    return {
        "id": aid,
        "author": "expert-1",
        "type": kind,
        "track_id": track,
        "points": points,
        "color": "#00e5ff",
        "width": 0.01,
        "frame": None,
        **extra,
    }


def test_schedule_replays_the_overlay() -> None:
    segment = Segment(
        "f.webm",
        "TR_1",
        "VP8",
        90000,
        first_arrival_ms=10_000,
        first_ts=0,
        duration=20.0,
        sync_points=[[0.0, 10_000]],
    )
    events = [
        {
            "t": 11_000,
            "type": "annotation",
            "annotation": _annotation(
                "A", frame={"rtp_timestamp": 1, "media_time": None, "source_ts": 45_000}
            ),
        },  # frame at 0.5 s
        {"t": 12_000, "type": "annotation", "annotation": _annotation("B")},
        {"t": 12_500, "type": "annotation", "annotation": _annotation("X", track="TR_2")},
        {"t": 13_000, "type": "annotation", "annotation": _annotation("P", "pointer")},
        {"t": 13_500, "type": "annotation", "annotation": _annotation("P2", "pointer")},
        {"t": 14_200, "type": "annotation", "annotation": _annotation("Q", "pointer", "TR_2")},
        {"t": 15_000, "type": "annotation_removed", "ids": ["A", "X"]},
    ]
    schedule = Schedule(schedule_annotations(events, segment))

    def ids(m: float) -> list[tuple[str, float]]:
        return [(a["id"], round(alpha, 2)) for a, alpha in schedule.at(m)]

    assert ids(0.45) == []
    assert ids(0.5) == [("A", 1.0)]
    assert ids(2.0) == [("A", 1.0), ("B", 1.0)]
    assert ids(3.25) == [("A", 1.0), ("B", 1.0), ("P", 0.83)]
    assert ids(3.5) == [("A", 1.0), ("B", 1.0), ("P2", 1.0)]  # the next pointer replaces it
    assert ids(4.1) == [("A", 1.0), ("B", 1.0), ("P2", 0.6)]
    assert ids(4.25) == [("A", 1.0), ("B", 1.0)]  # their pointer moved to the other video
    assert ids(5.0) == [("B", 1.0)]  # A removed, P2 faded out
    assert ids(1.0) == [("A", 1.0)]  # seeking back works
    assert set(schedule.drawn) == {"A", "B", "P", "P2"}


def test_draw_annotation_kinds_use_the_authors_colour() -> None:
    for kind, points, text in (
        ("arrow", [[0.2, 0.5], [0.8, 0.5]], ""),
        ("circle", [[0.5, 0.5], [0.6, 0.5]], ""),
        ("stroke", [[0.2, 0.2], [0.5, 0.6], [0.8, 0.2]], ""),
        ("text", [[0.3, 0.4]], "Cystic duct"),
        ("pointer", [[0.5, 0.5]], ""),
    ):
        image = np.zeros((H, W, 3), np.uint8)
        draw_annotation(
            image,
            {
                "type": kind,
                "points": points,
                "text": text,
                "width": 0.008,
                "color": "#ffeb3b",
                "author_name": "Dr. Expert",
            },
        )
        yellow = np.abs(image.astype(int) - np.array(parse_color("#ffeb3b"))).max(axis=2) < 8
        assert yellow.sum() > 100, kind
    image = np.zeros((H, W, 3), np.uint8)
    draw_annotation(image, {"type": "arrow", "points": [[0.1, 0.1], [0.9, 0.9]]}, alpha=0.5)
    assert 100 < image.max() < 140  # half of the default yellow
    pointer = {"type": "pointer", "points": [[0.5, 0.5]], "color": "#ffffff"}
    image = np.zeros((H, W, 3), np.uint8)
    draw_annotation(image, pointer, alpha=0.5)
    assert 120 <= image[H // 2, W // 2].min() <= 135 and image[:50].max() == 0  # a local blend
    for corner in ([0.0, 0.0], [1.0, 1.0]):  # clipped at the edges
        draw_annotation(image, {**pointer, "points": [corner]}, alpha=0.3)
    draw_annotation(image, {"type": "unknown", "points": [[0.1, 0.1]]})
    draw_annotation(image, {"type": "arrow", "points": [["x", 1]]})


def test_progress_bar_lines_when_not_a_tty() -> None:
    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return False

    sink = Sink()
    bar = ProgressBar(sink, label="export")  # type: ignore[arg-type]
    for done in range(1, 201):
        bar(done, 200)
    bar.close()
    lines = sink.text.splitlines()
    assert len(lines) == 11 and lines[-1].startswith("export: 100%")


def test_bad_input_is_refused(root: Path, sample_a: SampleRecording, tmp_path: Path) -> None:
    with pytest.raises(ExportInputError, match="not a recording id"):
        export_recording(root, "../etc", tmp_path / "x.mp4")
    with pytest.raises(ExportInputError, match="no recording"):
        export_recording(root, "or-9-20261122T080000Z-ffff", tmp_path / "x.mp4")
    with pytest.raises(ExportInputError, match="inside the recordings directory"):
        export_recording(root, ID_A, root / ID_A / "laparoscope-surgeon-1-001.webm")
    assert not list(tmp_path.iterdir())


def test_withdrawn_consent_is_never_exported(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    make_sample_recording(root, "or-2-20261122T090000Z-0002", seconds=0.5, consent="withdrawn")
    with pytest.raises(ExportInputError, match="withdrew consent"):
        export_recording(root, "or-2-20261122T090000Z-0002", tmp_path / "x.mp4", ExportOptions())
    assert not list(tmp_path.glob("*.mp4*"))


# --- the command ----------------------------------------------------------------------------


def orbridge(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "orbridge"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "orbridge.signaling.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORBRIDGE_")}
    env["ORBRIDGE_DATA_DIR"] = str(cwd / "data")
    return subprocess.run(
        [*command, "recordings", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cli_export_with_settings_regions(
    root: Path, sample_a: SampleRecording, tmp_path: Path
) -> None:
    config = tmp_path / "orbridge.toml"
    config.write_text(f"deidentify_regions = [{list(BANNER_RECT)}]\n")
    out = tmp_path / "clip.mp4"
    done = orbridge(
        tmp_path,
        "export",
        ID_A,
        "--burn-in",
        "--no-vitals",
        "--deidentify",
        "--config",
        str(config),
        "--recordings-dir",
        str(root),
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file() and not out.with_name("clip.mp4.part").exists()
    assert "export" in done.stderr and "100%" in done.stderr  # progress, a line per 10 %
    assert "masked 1 region(s) (settings)" in done.stdout
    report = json.loads(out.with_name("clip.mp4.report.json").read_text())
    assert report["deidentify"]["regions"] == [list(BANNER_RECT)]
    assert report["vitals"]["strip"] is False and report["height"] == H
    assert report["annotations"]["drawn"] == 1


def test_cli_export_default_output_and_no_regions_warning(
    root: Path, sample_b: SampleRecording, tmp_path: Path
) -> None:
    done = orbridge(tmp_path, "export", ID_B, "--deidentify", "--recordings-dir", str(root))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / f"{ID_B}.mp4").is_file()
    assert "no de-identification regions configured" in done.stderr
    assert "no regions configured" in done.stdout
    report = json.loads((tmp_path / f"{ID_B}.mp4.report.json").read_text())
    assert report["deidentify"]["regions"] == [] and report["deidentify"]["warnings"]
    assert report["deidentify"]["out_of_body_frames"] == 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["../etc"], "not a recording id"),
        (["or-9-20261122T080000Z-ffff"], "no recording"),
        ([ID_A, "--deidentify", "--mask", "0.1,0.1,0.2"], "--mask"),
        ([ID_A, "--deidentify", "--mask", "0.9,0.1,0.2,0.1"], "not inside the picture"),
        ([ID_A, "--deidentify", "--mask", "a,b,c,d"], "not numbers"),
    ],
)
def test_cli_bad_input_exits_2(
    root: Path, sample_a: SampleRecording, tmp_path: Path, args: list[str], message: str
) -> None:
    done = orbridge(tmp_path, "export", *args, "--recordings-dir", str(root))
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.startswith("orbridge recordings: ") and message in done.stderr
    assert not list(tmp_path.glob("*.mp4"))


def test_float_region_rounding_is_stable() -> None:
    # region_pixels rounds outwards, never inwards, for any frame size
    for width, height in ((640, 360), (1280, 720), (1920, 1080), (720, 576)):
        x, y, w, h = region_pixels(BANNER_RECT, width, height)
        fx, fy, fw, fh = BANNER_RECT
        assert x <= fx * width and y <= fy * height
        assert x + w >= math.floor((fx + fw) * width) and y + h >= math.floor((fy + fh) * height)
