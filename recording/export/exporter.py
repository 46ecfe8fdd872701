"""Export a recording's main video to an H.264 MP4, optionally burnt-in and de-identified.

:func:`export_recording` is synchronous and self-contained (run it in a thread or a process,
never on the event loop): it loads the manifest through
:class:`~recording.library.store.RecordingStore`
(path-safe), decodes the main video track's segments in timeline order with PyAV, and for each
frame:

1. de-identifies (``deidentify``): masks the configured regions, then blurs the frame if the
   out-of-body detector says so (:mod:`recording.export.deidentify`);
2. burns in (``burn_in``) the annotations visible at the frame's media time, placed to the
   frame by ``frame.source_ts`` (else by arrival ``t``), and a vitals strip under the picture
   (:mod:`recording.export.render`), looked up at the frame's timeline instant;
3. encodes it with libx264 (yuv420p, even size, CRF) at the source's timestamps.

The MP4 is written next to its target and renamed into place when complete; a JSON report goes
to ``<output>.report.json``. See docs/recording.md, "Export".
"""

from __future__ import annotations

import bisect
import contextlib
import fractions
import json
import math
import os
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import av
import cv2
import numpy as np

from orbridge.recording.eventlog import read_events
from orbridge.recording.export.deidentify import (
    DEFAULT_GAP_FRAMES,
    DeidentifyReport,
    OutOfBodyDetector,
    Region,
    blur_frame,
    check_region,
    in_body_score,
    mask_regions,
    region_pixels,
)
from orbridge.recording.export.render import (
    POINTER_FADE_MS,
    VitalsTimeline,
    draw_annotation,
    draw_vitals_strip,
    vitals_strip_height,
)
from orbridge.recording.library.store import RecordingNotFound, RecordingStore
from orbridge.recording.manifest import Manifest, Segment
from orbridge.rooms.annotations.model import MAX_OVERLAY

__all__ = [
    "ExportError",
    "ExportInputError",
    "ExportOptions",
    "ExportResult",
    "ProgressBar",
    "Schedule",
    "Shown",
    "export_recording",
    "schedule_annotations",
]

Progress = Callable[[int, int], None]
"""``progress(frames done, frames expected)``; the total is an estimate from the manifest."""

_TB = fractions.Fraction(1, 90000)
FRAME_EPSILON_S = 0.002
"""Timestamps in WebM/Matroska are whole milliseconds: a frame 0.5 ms early is that frame."""


class ExportError(RuntimeError):
    """The export failed (decoding, encoding, disk)."""


class ExportInputError(ValueError):
    """Bad input: an unsafe or unknown recording id, no video, an unusable output path."""


@dataclass
class ExportOptions:
    burn_in: bool = False
    vitals: bool = True
    """With ``burn_in``: stack a vitals strip under the picture (if the log has vitals)."""
    deidentify: bool = False
    regions: list[Region] = field(default_factory=list)
    regions_source: str = "none"
    crf: int = 20
    preset: str = "veryfast"
    gap_frames: int = DEFAULT_GAP_FRAMES


@dataclass
class ExportResult:
    output: Path
    report_path: Path
    report: dict[str, Any]
    deidentify: DeidentifyReport | None = None

    def summary(self) -> str:
        r = self.report
        lines = [
            f"exported {r['recording']} -> {self.output}",
            f"  {r['frames']} frames, {r['duration']:.2f} s, {r['width']}x{r['height']}, "
            f"H.264 CRF {r['options']['crf']}, in {r['elapsed_s']:.1f} s "
            f"({r['speed_fps']:.0f} frames/s, {r['x_realtime']:.1f}x real time)",
        ]
        if r["options"]["burn_in"]:
            a = r["annotations"]
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(a["by_type"].items())) or "none"
            strip = "with" if r["vitals"]["strip"] else "without"
            lines.append(f"  burned in {a['drawn']} annotation(s) ({kinds}), {strip} vitals strip")
        if self.deidentify is not None:
            lines.append(f"  de-identified: {self.deidentify.summary()}")
        lines.extend(f"  warning: {w}" for w in r["warnings"])
        lines.append(f"  report: {self.report_path}")
        return "\n".join(lines)


# --- annotations on a segment's media time -------------------------------------------------


@dataclass
class Shown:
    """One annotation on one segment: shown for media times in ``[start, end)`` (seconds)."""

    annotation: dict[str, Any]
    start: float
    end: float
    order: int
    pointer: bool = False


def _start_of(annotation: Mapping[str, Any], t: float, segment: Segment) -> float:
    """File position where an annotation appears: its frame if known, else its arrival."""
    frame = annotation.get("frame")
    if isinstance(frame, Mapping):
        source_ts = frame.get("source_ts")
        if isinstance(source_ts, int) and not isinstance(source_ts, bool):
            media = segment.media_time_of_ts(source_ts)
            if media is not None:
                return media
    return segment.media_time(t)


def schedule_annotations(events: Iterable[Mapping[str, Any]], segment: Segment) -> list[Shown]:
    """When each annotation of ``segment``'s track shows, replaying the room's overlay.

    As the live overlay: an annotation stays until an ``annotation_removed`` names it, a newer
    annotation with the same id replaces it, the room keeps at most ``MAX_OVERLAY`` (oldest
    evicted), and a pointer lasts ``POINTER_FADE_MS`` or until its author's next pointer.
    """
    shown: list[Shown] = []
    kept: OrderedDict[str, Shown | None] = OrderedDict()  # the room's overlay, any track
    pointers: dict[str, Shown] = {}
    fade = POINTER_FADE_MS / 1000

    def close(item: Shown | None, t: float) -> None:
        if item is not None:
            item.end = max(item.start, min(item.end, segment.media_time(t)))

    for event in events:
        kind, t = event.get("type"), float(event["t"])
        if kind == "annotation" and isinstance(event.get("annotation"), Mapping):
            annotation = dict(event["annotation"])
            if not isinstance(annotation.get("points"), list):
                continue
            mine = annotation.get("track_id") == segment.track_id
            item = None
            if mine:
                start = _start_of(annotation, t, segment)
                pointer = annotation.get("type") == "pointer"
                item = Shown(annotation, start, math.inf, len(shown), pointer)
                shown.append(item)
            if annotation.get("type") == "pointer":
                # As live: an author's newer pointer replaces the older one, on any track.
                author = str(annotation.get("author") or "")
                previous = pointers.pop(author, None)
                if previous is not None:
                    cut = item.start if item is not None else segment.media_time(t)
                    previous.end = max(previous.start, min(previous.end, cut))
                if item is not None:
                    item.end = item.start + fade
                    pointers[author] = item
                continue
            annotation_id = str(annotation.get("id") or "")
            if annotation_id in kept:
                replaced = kept.pop(annotation_id)
                if replaced is not None:
                    replaced.end = max(
                        replaced.start,
                        min(replaced.end, item.start if item else segment.media_time(t)),
                    )
            kept[annotation_id] = item
            while len(kept) > MAX_OVERLAY:
                close(kept.popitem(last=False)[1], t)
        elif kind == "annotation_removed":
            for annotation_id in event.get("ids") or []:
                if isinstance(annotation_id, str) and annotation_id in kept:
                    close(kept.pop(annotation_id), t)
    return [s for s in shown if s.end > s.start]


class Schedule:
    """Visible annotations at increasing media times (a cursor; going back restarts it).

    A frame at media time ``m`` shows what starts at or before ``m + tolerance`` and ends
    after ``m``; the tolerance absorbs the container's millisecond rounding of timestamps
    (replay-events.js uses the same 2 ms).
    """

    def __init__(self, shown: Sequence[Shown], tolerance: float = FRAME_EPSILON_S) -> None:
        self._items = sorted(shown, key=lambda s: s.start)
        self._starts = [s.start for s in self._items]
        self.tolerance = tolerance
        self._reset()
        self.drawn: dict[str, str] = {}  # id -> type, of everything drawn at least once

    def _reset(self) -> None:
        self._cursor = 0
        self._active: list[Shown] = []
        self._last = -math.inf

    def at(self, media_s: float) -> list[tuple[dict[str, Any], float]]:
        """``(annotation, alpha)`` to draw at ``media_s``, oldest first, pointers last."""
        if media_s < self._last:
            self._reset()
        self._last = media_s
        end = bisect.bisect_right(self._starts, media_s + self.tolerance)
        if end > self._cursor:
            self._active.extend(self._items[self._cursor : end])
            self._active.sort(key=lambda s: (s.pointer, s.order))
            self._cursor = end
        self._active = [s for s in self._active if s.end > media_s]
        out = []
        for item in self._active:
            alpha = 1.0
            if item.pointer:
                alpha = max(0.0, min(1.0, 1.0 - (media_s - item.start) * 1000 / POINTER_FADE_MS))
            if alpha > 0.0:
                out.append((item.annotation, alpha))
                key = str(item.annotation.get("id") or f"#{item.order}")
                self.drawn.setdefault(key, str(item.annotation.get("type")))
        return out


# --- progress ------------------------------------------------------------------------------


class ProgressBar:
    """``progress`` callback drawing on a stream: in place on a TTY, else a line every 10 %."""

    def __init__(self, stream: IO[str] | None = None, label: str = "export") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._last_step = -1
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        fraction = min(1.0, done / total) if total > 0 else 0.0
        rate = done / max(now - self._started, 1e-6)
        if self.tty:
            if now - self._last_draw < 0.1 and done < total:
                return
            self._last_draw = now
            filled = round(30 * fraction)
            eta = (total - done) / rate if rate > 0 and total > done else 0.0
            self.stream.write(
                f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:3.0f}% "
                f"{done}/{total} frames {rate:5.1f} fps ETA {eta:4.0f} s "
            )
            self._drawn = True
        else:
            step = int(fraction * 10)
            if step <= self._last_step:
                return
            self._last_step = step
            self.stream.write(f"{self.label}: {10 * step}% ({done}/{total} frames, {rate:.0f}/s)\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


# --- the pipeline --------------------------------------------------------------------------


@dataclass
class _Item:
    """A decoded frame on its way through de-identification, overlays and the encoder."""

    image: np.ndarray
    segment: Segment
    schedule: Schedule | None
    media_s: float
    out_s: float  # output time (s)
    duration: float | None


class _Encoder:
    """libx264 into MP4; holds one frame back so each packet gets its true duration."""

    def __init__(
        self, path: Path, width: int, height: int, rate: fractions.Fraction, options: ExportOptions
    ) -> None:
        self.container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = _TB
        self.stream.options = {"crf": str(options.crf), "preset": options.preset}
        self._held: tuple[np.ndarray, int] | None = None
        self._durations: dict[int, int] = {}
        self.frames = 0
        self.end_pts = 0
        self.default_ticks = max(1, round(90000 / float(rate)))

    def add(self, image: np.ndarray, out_s: float) -> None:
        pts = round(out_s * 90000)
        if self._held is not None:
            pts = max(pts, self._held[1] + 1)  # strictly increasing, whatever the source says
            self._encode(*self._held, pts - self._held[1])
        self._held = (image, pts)

    def _encode(self, image: np.ndarray, pts: int, ticks: int) -> None:
        frame = av.VideoFrame.from_ndarray(
            cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p"
        )
        frame.pts, frame.time_base = pts, _TB
        self._durations[pts] = ticks
        self.end_pts = pts + ticks
        self.frames += 1
        self._mux(self.stream.encode(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if packet.pts is not None:
                packet.duration = self._durations.pop(packet.pts, self.default_ticks)
            self.container.mux(packet)

    def finish(self, last_duration: float | None) -> None:
        if self._held is not None:
            ticks = round((last_duration or 0) * 90000) or self.default_ticks
            self._encode(*self._held, max(1, ticks))
            self._held = None
        self._mux(self.stream.encode(None))
        self.container.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


def _even(value: int) -> int:
    return value + value % 2


def _fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` in a ``width`` x ``height`` picture: as is, padded to even, or letterboxed."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    if w <= width and h <= height and width - w <= 1 and height - h <= 1:
        return cv2.copyMakeBorder(image, 0, height - h, 0, width - w, cv2.BORDER_CONSTANT, 0)
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((height, width, 3), np.uint8)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def _segments(manifest: Manifest) -> tuple[str, list[Segment]]:
    track = manifest.main_video()
    if track is None:
        raise ExportInputError(f"recording {manifest.id} has no video")
    segments = [s for s in track.segments if s.started]
    segments.sort(key=lambda s: float(s.first_arrival_ms or 0))
    return track.key, segments


def _frame_rate(stream: Any) -> fractions.Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 1 <= float(rate) <= 240:
            return fractions.Fraction(rate).limit_denominator(1001)
    return None


def _bgr(frame: av.VideoFrame) -> np.ndarray:
    """A writable BGR copy of a decoded frame (OpenCV's I420 conversion is faster than
    swscale's for the usual yuv420p)."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


def _decode(path: Path, warnings: list[str]) -> Iterator[tuple[np.ndarray, float, float | None]]:
    """``(BGR image, media seconds, duration)`` of every frame; a torn tail stops quietly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if frame.pts is None or frame.time is None:
                    continue
                duration = None
                if frame.duration and frame.time_base:
                    duration = float(frame.duration * frame.time_base)
                yield _bgr(frame), float(frame.time), duration
        except (av.error.InvalidDataError, av.error.EOFError) as exc:
            # An interrupted recording ends mid-cluster: keep what decoded.
            warnings.append(f"{path.name}: decoding stopped early ({exc})")


def _probe(path: Path) -> tuple[int, int, fractions.Fraction | None]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height, _frame_rate(stream)


def export_recording(
    recordings_dir: str | Path,
    recording_id: str,
    output: str | Path,
    options: ExportOptions | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Export ``recording_id``'s main video to ``output`` (an MP4) and write its report.

    Raises :class:`ExportInputError` for bad input (unsafe id, unknown recording, no video,
    an output inside the recordings directory) and :class:`ExportError` when it fails.
    """
    options = options or ExportOptions()
    started = time.monotonic()
    store = RecordingStore(recordings_dir)
    try:
        manifest = store.load(recording_id)  # checks the id before touching the disk
    except RecordingNotFound as exc:
        raise ExportInputError(f"no recording {recording_id!r} in {recordings_dir}") from exc
    except ValueError as exc:
        raise ExportInputError(str(exc)) from exc
    except OSError as exc:
        raise ExportError(f"cannot read recording {recording_id}: {exc}") from exc
    try:
        options.regions = [check_region(r) for r in options.regions]
    except ValueError as exc:
        raise ExportInputError(str(exc)) from exc
    output = Path(output)
    if output.resolve().is_relative_to(Path(recordings_dir).resolve()):
        raise ExportInputError("the output must not be inside the recordings directory")
    if not output.parent.is_dir():
        raise ExportInputError(f"no directory {output.parent} for the output")
    track_key, segments = _segments(manifest)
    warnings: list[str] = []
    if manifest.consent.state == "withdrawn":
        # The patient took consent back: nothing leaves the server, burned in or not.
        raise ExportInputError(f"recording {recording_id}: the patient withdrew consent")
    if not manifest.visible:
        warnings.append(
            f"consent is {manifest.consent.state!r}: the recording is not cleared for "
            "viewing beyond the room's moderators"
        )
    files: list[tuple[Segment, Path]] = []
    for segment in segments:
        try:
            files.append((segment, store.file_path(recording_id, segment.file)))
        except (RecordingNotFound, ValueError):
            warnings.append(f"{segment.file}: missing, skipped")
    if not files:
        raise ExportInputError(f"recording {recording_id} has no readable video file")
    events: list[dict[str, Any]] = []
    with contextlib.suppress(RecordingNotFound):
        events = read_events(store.file_path(recording_id, manifest.events))

    tmp = output.with_name(output.name + ".part")
    try:
        report, deid = _run(manifest, track_key, files, events, tmp, options, warnings, progress)
        os.replace(tmp, output)
    except (ExportInputError, ExportError):
        tmp.unlink(missing_ok=True)
        raise
    except (av.error.FFmpegError, OSError, cv2.error) as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(str(exc)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    elapsed = time.monotonic() - started
    report.update(
        output=str(output),
        elapsed_s=round(elapsed, 3),
        speed_fps=round(report["frames"] / max(elapsed, 1e-6), 1),
        x_realtime=round(report["duration"] / max(elapsed, 1e-6), 2),
    )
    report_path = output.with_name(output.name + ".report.json")
    report_path.write_text(json.dumps(report, indent=1))
    return ExportResult(output, report_path, report, deid)


def _run(
    manifest: Manifest,
    track_key: str,
    files: list[tuple[Segment, Path]],
    events: list[dict[str, Any]],
    tmp: Path,
    options: ExportOptions,
    warnings: list[str],
    progress: Progress | None,
) -> tuple[dict[str, Any], DeidentifyReport | None]:
    src_w, src_h, rate = _probe(files[0][1])
    rate = rate or fractions.Fraction(30)
    pic_w, pic_h = _even(src_w), _even(src_h)
    vitals = VitalsTimeline(events) if options.burn_in and options.vitals else None
    strip_h = vitals_strip_height(pic_w, pic_h) if vitals is not None and not vitals.empty else 0
    total = sum(s.packets or round((s.duration or 0) * float(rate)) for s, _ in files)
    encoder = _Encoder(tmp, pic_w, pic_h + strip_h, rate, options)
    deid: DeidentifyReport | None = None
    detector: OutOfBodyDetector | None = None
    if options.deidentify:
        deid = DeidentifyReport(
            regions=list(options.regions),
            regions_source=options.regions_source if options.regions else "none",
            region_pixels=[region_pixels(r, src_w, src_h) for r in options.regions],
        )
        if not options.regions:
            deid.warnings.append(
                "no de-identification regions configured (--mask or deidentify_regions): "
                "burned-in patient data is NOT masked; only out-of-body frames are blurred"
            )
        detector = OutOfBodyDetector(options.gap_frames)
    pending: deque[_Item] = deque()
    done = 0
    first_arrival = float(files[0][0].first_arrival_ms or 0)
    t0: float | None = None
    last_out = -math.inf
    last_duration: float | None = None
    segment_reports = []
    drawn: dict[str, str] = {}  # annotation id -> type, over all segments

    def finish(item: _Item, out_of_body: bool) -> None:
        nonlocal done
        image = item.image
        if deid is not None:
            if out_of_body:
                blur_frame(image)
            step = item.duration or 1 / float(rate)
            deid.record(
                deid.frames,
                out_of_body,
                item.out_s,
                item.out_s + step,
                item.segment.wall_ms(item.media_s),
            )
        if item.schedule is not None:
            for annotation, alpha in item.schedule.at(item.media_s):
                draw_annotation(image, annotation, alpha)
        picture = _fit(image, pic_w, pic_h)
        if strip_h:
            assert vitals is not None
            canvas = np.empty((pic_h + strip_h, pic_w, 3), np.uint8)
            canvas[:pic_h] = picture
            draw_vitals_strip(canvas[pic_h:], vitals.at(item.segment.wall_ms(item.media_s)))
            picture = canvas
        encoder.add(picture, item.out_s)
        done += 1
        if progress is not None:
            progress(done, max(total, done))

    try:
        for segment, path in files:
            schedule = None
            if options.burn_in:
                schedule = Schedule(schedule_annotations(events, segment))
            offset = (float(segment.first_arrival_ms or 0) - first_arrival) / 1000
            count = 0
            for image, media_s, duration in _decode(path, warnings):
                if t0 is None:
                    t0 = offset + media_s  # the export starts at 0
                out_s = max(offset + media_s - t0, last_out + 1 / 90000)
                last_out, last_duration = out_s, duration
                if not image.flags.writeable:
                    image = image.copy()
                if deid is not None:
                    mask_regions(image, options.regions)
                item = _Item(image, segment, schedule, media_s, out_s, duration)
                count += 1
                if detector is None:
                    finish(item, False)
                    continue
                pending.append(item)
                for decision in detector.push(in_body_score(image)):
                    finish(pending.popleft(), decision)
            segment_reports.append(
                {
                    "file": segment.file,
                    "track_id": segment.track_id,
                    "frames": count,
                    "offset": round(offset, 3),
                }
            )
            if schedule is not None:
                drawn.update(schedule.drawn)
        if detector is not None:
            for decision in detector.flush():
                finish(pending.popleft(), decision)
        if encoder.frames == 0 and encoder._held is None:
            raise ExportError("no frame could be decoded")
        encoder.finish(last_duration)
    except BaseException:
        encoder.abort()
        raise
    by_type: dict[str, int] = {}
    for kind in drawn.values():
        by_type[kind] = by_type.get(kind, 0) + 1
    report = {
        "recording": manifest.id,
        "procedure": manifest.procedure,
        "track": track_key,
        "options": {
            "burn_in": options.burn_in,
            "vitals": options.vitals and options.burn_in,
            "deidentify": options.deidentify,
            "crf": options.crf,
            "preset": options.preset,
        },
        "segments": segment_reports,
        "frames": encoder.frames,
        "duration": round(encoder.end_pts / 90000, 3),
        "width": pic_w,
        "height": pic_h + strip_h,
        "picture": [pic_w, pic_h],
        "fps": round(float(rate), 3),
        "annotations": {"drawn": len(drawn), "by_type": by_type},
        "vitals": {"strip": bool(strip_h), "strip_height": strip_h},
        "deidentify": deid.to_json() if deid is not None else None,
        "warnings": warnings,
    }
    return report, deid
