"""Export a recording's main video to an H.264 MP4, optionally burnt-in and de-identified.

:func:`export_recording` is synchronous and self-contained (run it in a thread or a process,
never on the event loop): it loads the manifest through
:class:`~recording.library.store.RecordingStore`
(path-safe), decodes the main video track's segments in timeline order with PyAV
(:mod:`recording.export.video`), and for each frame:

1. de-identifies (``deidentify``): masks the configured regions, then blurs the frame if the
   out-of-body detector says so (:mod:`recording.export.deidentify`);
2. burns in (``burn_in``) the annotations visible at the frame's media time (placed to the
   frame by ``frame.source_ts``, else by arrival ``t``: :mod:`recording.export.schedule`) and a
   vitals strip under the picture (:mod:`recording.export.render`), looked up at the frame's
   timeline instant;
3. encodes it with libx264 (yuv420p, even size, CRF) at the source's timestamps
   (:mod:`recording.export.video`).

This module is the pipeline that ties those together, and its inputs, errors and report. The MP4
is written next to its target and renamed into place when complete; a JSON report goes to
``<output>.report.json``; ``progress`` (:mod:`recording.export.progress`) hears of every frame.
See docs/recording.md, "Export".
"""

from __future__ import annotations

import contextlib
import fractions
import json
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from orbridge.recording.export.progress import Progress
from orbridge.recording.export.render import (
    VitalsTimeline,
    draw_annotation,
    draw_vitals_strip,
    vitals_strip_height,
)
from orbridge.recording.export.schedule import Schedule, schedule_annotations
from orbridge.recording.export.video import Encoder, decode, even, fit, probe
from orbridge.recording.files import private_opener, replace_private
from orbridge.recording.library.store import RecordingNotFound, RecordingStore
from orbridge.recording.manifest import Manifest, Segment

__all__ = ["ExportError", "ExportInputError", "ExportOptions", "ExportResult", "export_recording"]


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


def _segments(manifest: Manifest) -> tuple[str, list[Segment]]:
    track = manifest.main_video()
    if track is None:
        raise ExportInputError(f"recording {manifest.id} has no video")
    segments = [s for s in track.segments if s.started]
    segments.sort(key=lambda s: float(s.first_arrival_ms or 0))
    return track.key, segments


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
        # Patient video, 0600 like the recording: FFmpeg opens the file by its name and keeps
        # the mode of one that is already there, so it is created here first.
        with open(tmp, "wb", opener=private_opener):
            pass
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
    replace_private(report_path, json.dumps(report, indent=1))
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
    src_w, src_h, rate = probe(files[0][1])
    rate = rate or fractions.Fraction(30)
    pic_w, pic_h = even(src_w), even(src_h)
    vitals = VitalsTimeline(events) if options.burn_in and options.vitals else None
    strip_h = vitals_strip_height(pic_w, pic_h) if vitals is not None and not vitals.empty else 0
    total = sum(s.packets or round((s.duration or 0) * float(rate)) for s, _ in files)
    encoder = Encoder(tmp, pic_w, pic_h + strip_h, rate, options.crf, options.preset)
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
        picture = fit(image, pic_w, pic_h)
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
            for image, media_s, duration in decode(path, warnings):
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
        if encoder.empty:
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
