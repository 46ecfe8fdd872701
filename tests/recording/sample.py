"""Build a complete recording offline, as a live session would have left it.

The export and replay tests and the export benchmark need recordings whose truth is known:
which frame an annotation was drawn on, where the patient banner is, when the scope was
withdrawn. This writes one with the real pieces (the synthetic laparoscope encoded with
libvpx, :class:`~recording.live.writer.SegmentWriter`, :class:`~recording.eventlog.EventLog`, a
:class:`~recording.manifest.Manifest`), skipping only the network. Frame ``i`` is captured at
``start_ms + i * 1000 / fps`` (the picture's timestamp code says so) and arrives
``arrival_delay_ms`` later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2

from orbridge.media.sim.encoder import VideoEncoder
from orbridge.media.sim.scene import SyntheticScene
from orbridge.recording.eventlog import EventLog
from orbridge.recording.live.writer import SegmentWriter
from orbridge.recording.manifest import (
    Chapter,
    Consent,
    Manifest,
    ParticipantEntry,
    Segment,
    TrackEntry,
)

__all__ = ["SampleAnnotation", "SampleRecording", "make_sample_recording"]


@dataclass(frozen=True)
class SampleAnnotation:
    """An arrow (or another kind) drawn on frame ``frame`` and logged ``delay_ms`` later."""

    frame: int
    type: str = "arrow"
    points: tuple[tuple[float, float], ...] = ((0.35, 0.35), (0.55, 0.55))
    text: str = ""
    color: str = "#00e5ff"
    width: float = 0.008
    delay_ms: int = 400


@dataclass
class SampleRecording:
    directory: Path
    manifest: Manifest
    fps: int
    start_ms: int
    arrival_delay_ms: int
    annotation_ids: list[str] = field(default_factory=list)

    def capture_ms(self, frame: int) -> int:
        return self.start_ms + round(frame * 1000 / self.fps)


def make_sample_recording(
    root: str | Path,
    recording_id: str = "or-1-20261122T080000Z-0001",
    *,
    room: str = "or-1",
    seconds: float = 4.0,
    fps: int = 30,
    width: int = 640,
    height: int = 360,
    start_ms: int = 1_795_000_000_000,
    arrival_delay_ms: int = 40,
    annotations: tuple[SampleAnnotation, ...] = (SampleAnnotation(frame=45),),
    vitals: bool = True,
    out_of_body_every: float | None = None,
    out_of_body_seconds: float = 1.0,
    procedure: str = "Laparoscopic cholecystectomy",
    hospital: str = "Maduo County People's Hospital",
    tags: tuple[str, ...] = ("cholecystectomy", "teaching"),
    consent: str = "written",
    codec: str = "VP8",
) -> SampleRecording:
    """Write ``<root>/<recording_id>/`` with one laparoscope segment and its event log."""
    directory = Path(root) / recording_id
    directory.mkdir(parents=True, exist_ok=True)
    frames = int(seconds * fps)
    suffix = ".webm" if codec == "VP8" else ".mkv"
    file_name = f"laparoscope-surgeon-1-001{suffix}"
    scene = SyntheticScene(
        width, height, out_of_body_every=out_of_body_every,
        out_of_body_seconds=out_of_body_seconds,
    )  # fmt: skip
    encoder = VideoEncoder(codec, width, height, fps, 1_000_000, gop=fps)  # type: ignore[arg-type]
    writer = SegmentWriter(directory / file_name, codec, queue_size=frames + 10)
    log = EventLog(directory / "events.jsonl", queue_size=100_000)
    sample = SampleRecording(directory, Manifest(recording_id, room, start_ms), fps, start_ms,
                             arrival_delay_ms)  # fmt: skip

    def event(t: float, kind: str, **data: Any) -> None:
        log.append({"t": int(t), "type": kind, **data})

    track = {"id": "TR_sample00001", "participant": "surgeon-1", "source": "laparoscope",
             "kind": "video", "codec": codec}  # fmt: skip
    event(start_ms, "recording_started", id=recording_id, by="moderator-1")
    event(start_ms, "track_published", track=track, file=file_name)
    pending = sorted(annotations, key=lambda a: a.frame)
    next_vitals = start_ms
    ecg_phase = 0.0
    for index in range(frames):
        capture = sample.capture_ms(index)
        image = scene.render(index / fps, capture, index)
        frame = av.VideoFrame.from_ndarray(
            cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p"
        )
        packet = encoder.encode(frame, index)
        if packet is not None:
            writer.write_data(bytes(packet), int(packet.pts), bool(packet.is_keyframe),
                              capture + arrival_delay_ms)  # fmt: skip
        while vitals and next_vitals <= capture:
            samples = []
            for _ in range(100):  # 200 ms of ECG at 500 Hz: a spike per beat at 72/min
                ecg_phase = (ecg_phase + 72 / 60 / 500) % 1.0
                samples.append(round(1.2 * math.exp(-((ecg_phase - 0.3) ** 2) / 0.0004), 4))
            numerics = [
                {"kind": "hr", "value": 72, "unit": "/min", "loinc": "8867-4",
                 "time_ms": next_vitals, "source": "monitor-1"},
                {"kind": "spo2", "value": 97 if index < frames // 2 else 88, "unit": "%",
                 "loinc": "59408-5", "time_ms": next_vitals, "source": "monitor-1"},
            ]  # fmt: skip
            waveform = {"kind": "ecg_ii", "start_ms": next_vitals, "rate_hz": 500,
                        "seq": (next_vitals - start_ms) // 200, "unit": "mV",
                        "samples": samples, "source": "monitor-1"}  # fmt: skip
            batch = {"room": room, "received_ms": next_vitals + 5, "via": "hl7",
                     "numerics": numerics, "waveforms": [waveform]}  # fmt: skip
            event(next_vitals + 5, "vitals", batch=batch)
            next_vitals += 200
        while pending and pending[0].frame == index:
            spec = pending.pop(0)
            annotation_id = f"AN_sample{index:08d}"
            sample.annotation_ids.append(annotation_id)
            annotation = {
                "id": annotation_id, "room": room, "author": "expert-1",
                "author_name": "Dr. Expert", "color": spec.color, "type": spec.type,
                "track_id": track["id"], "points": [list(p) for p in spec.points],
                "text": spec.text, "width": spec.width,
                "frame": {"rtp_timestamp": (12345 + int(packet.pts if packet else 0)) % 2**32,
                          "media_time": None, "source_ts": round(index * 90000 / fps)},
                "frozen": False, "client_id": "", "sent_ms": None,
                "server_ms": capture + arrival_delay_ms + spec.delay_ms,
            }  # fmt: skip
            event(capture + arrival_delay_ms + spec.delay_ms, "annotation", annotation=annotation)
    end_ms = sample.capture_ms(frames) + arrival_delay_ms
    event(start_ms + 1000, "chapter", title="Calot's triangle", by="expert-1")
    event(end_ms, "track_ended", track=track, reason="unpublished")
    event(end_ms, "recording_stopped", by="moderator-1", reason="stopped")
    info = writer.close_sync()
    log.close_sync()
    if info.error:
        raise RuntimeError(f"sample recording failed: {info.error}")
    segment = Segment.from_json({**info.to_json(), "file": file_name, "track_id": track["id"]})
    manifest = sample.manifest
    manifest.state = "complete"
    manifest.node = "sample"
    manifest.procedure, manifest.hospital, manifest.tags = procedure, hospital, list(tags)
    manifest.consent = Consent(consent, "", start_ms, "moderator-1")
    manifest.stopped_ms = end_ms
    manifest.started_by = {"identity": "moderator-1", "name": "Moderator", "role": "moderator"}
    manifest.participants = [
        ParticipantEntry("surgeon-1", "County surgeon", "surgeon", start_ms),
        ParticipantEntry("expert-1", "Dr. Expert", "expert", start_ms),
    ]
    video = TrackEntry("laparoscope-surgeon-1", "surgeon-1", "laparoscope", "video", codec,
                       info.width, info.height, [segment])  # fmt: skip
    manifest.tracks = [video]
    manifest.chapters = [Chapter(start_ms + 1000, "Calot's triangle", "expert-1")]
    manifest.save(directory)
    return sample
