"""The manifest of a recording, and the mapping between media time and the timeline.

See docs/recording.md for the format and the sync model. Everything here is plain data:
loading, saving (atomic replace) and the time arithmetic replay and export share.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orbridge.recording.files import replace_private

__all__ = [
    "CONSENT_STATES",
    "MANIFEST",
    "VISIBLE_CONSENT",
    "Chapter",
    "Consent",
    "Manifest",
    "ParticipantEntry",
    "Segment",
    "TrackEntry",
    "check_file_name",
    "check_recording_id",
    "new_recording_id",
]

MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
VERSION = 1
CONSENT_STATES = ("written", "verbal", "pending", "withdrawn", "not_required")
VISIBLE_CONSENT = frozenset({"written", "verbal", "not_required"})
"""Consent states under which a recording is shown beyond the room's moderators."""

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def check_recording_id(value: str) -> str:
    """A recording id is a single safe path component (ValueError otherwise)."""
    if not isinstance(value, str) or not _ID_RE.match(value) or ".." in value:
        raise ValueError(f"not a recording id: {value!r}")
    return value


def check_file_name(value: str) -> str:
    """A file name inside a recording: one safe path component (ValueError otherwise)."""
    if not isinstance(value, str) or not _FILE_RE.match(value) or ".." in value:
        raise ValueError(f"not a recording file name: {value!r}")
    return value


def new_recording_id(room: str, now_ms: int | None = None) -> str:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_ms / 1000))
    return check_recording_id(f"{room}-{stamp}-{os.urandom(2).hex()}")


@dataclass
class Segment:
    """One file of a track (see recording.live.writer.SegmentInfo, whose fields it copies)."""

    file: str
    track_id: str
    codec: str
    clock_rate: int
    first_arrival_ms: int | None = None
    first_ts: int | None = None
    last_arrival_ms: int | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    packets: int = 0
    bytes: int = 0
    dropped: int = 0
    closed: bool = False
    error: str | None = None
    sync_points: list[list[float]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def started(self) -> bool:
        return self.first_arrival_ms is not None

    @property
    def end_ms(self) -> float | None:
        """Timeline end of the segment (None before its first packet)."""
        if self.first_arrival_ms is None:
            return None
        if self.duration is not None:
            return self.wall_ms(self.duration)
        return float(self.last_arrival_ms or self.first_arrival_ms)

    def _points(self) -> list[tuple[float, float]]:
        assert self.first_arrival_ms is not None
        points = [(0.0, float(self.first_arrival_ms))]
        for media_s, arrival in self.sync_points:
            if media_s > points[-1][0]:
                points.append((float(media_s), float(arrival)))
        return points

    def wall_ms(self, media_s: float) -> float:
        """Timeline instant (ms since the epoch) of media time ``media_s`` in this file.

        Piecewise linear through the sync points; beyond the last one, at the media rate.
        """
        points = self._points()
        index = bisect.bisect_right([p[0] for p in points], media_s) - 1
        index = max(0, min(index, len(points) - 1))
        m0, w0 = points[index]
        if index + 1 < len(points):
            m1, w1 = points[index + 1]
            return w0 + (media_s - m0) * (w1 - w0) / (m1 - m0)
        return w0 + (media_s - m0) * 1000.0

    def media_time(self, wall_ms: float) -> float:
        """Inverse of :meth:`wall_ms`: the file position (s) of a timeline instant."""
        points = self._points()
        walls = [p[1] for p in points]
        index = bisect.bisect_right(walls, wall_ms) - 1
        index = max(0, min(index, len(points) - 1))
        m0, w0 = points[index]
        if index + 1 < len(points):
            m1, w1 = points[index + 1]
            if w1 > w0:
                return m0 + (wall_ms - w0) * (m1 - m0) / (w1 - w0)
        return m0 + (wall_ms - w0) / 1000.0

    def media_time_of_ts(self, source_ts: int) -> float | None:
        """File position (s) of the frame with source timestamp ``source_ts``."""
        if self.first_ts is None:
            return None
        return (source_ts - self.first_ts) / self.clock_rate


@dataclass
class TrackEntry:
    """One published source of one participant: its segments, in order."""

    key: str
    participant: str
    source: str
    kind: str
    codec: str
    width: int | None = None
    height: int | None = None
    segments: list[Segment] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return round(sum(s.duration or 0.0 for s in self.segments), 3)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrackEntry:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["segments"] = [Segment.from_json(s) for s in data.get("segments", [])]
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["segments"] = [s.to_json() for s in self.segments]
        data["duration"] = self.duration
        return data

    def segment_at(self, wall_ms: float) -> Segment | None:
        """The segment playing at a timeline instant (None in a gap)."""
        for segment in self.segments:
            end = segment.end_ms
            start = segment.first_arrival_ms
            if start is not None and end is not None and start <= wall_ms < end:
                return segment
        return None

    def segment_of_track(self, track_id: str) -> list[Segment]:
        return [s for s in self.segments if s.track_id == track_id]


@dataclass
class Consent:
    state: str = "pending"
    note: str = ""
    updated_ms: int = 0
    by: str = ""

    def __post_init__(self) -> None:
        if self.state not in CONSENT_STATES:
            raise ValueError(f"consent must be one of {', '.join(CONSENT_STATES)}")


@dataclass
class ParticipantEntry:
    identity: str
    name: str
    role: str
    joined_ms: int
    left_ms: int | None = None


@dataclass
class Chapter:
    t: int
    title: str
    by: str


@dataclass
class Manifest:
    id: str
    room: str
    started_ms: int
    node: str = ""
    state: str = "recording"
    procedure: str = ""
    hospital: str = ""
    tags: list[str] = field(default_factory=list)
    consent: Consent = field(default_factory=Consent)
    stopped_ms: int | None = None
    started_by: dict[str, str] = field(default_factory=dict)
    participants: list[ParticipantEntry] = field(default_factory=list)
    tracks: list[TrackEntry] = field(default_factory=list)
    chapters: list[Chapter] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    events: str = EVENTS
    version: int = VERSION

    # -- queries ---------------------------------------------------------------------------

    @property
    def end_ms(self) -> int:
        """Timeline end: the stop, else the last media, else the start."""
        if self.stopped_ms is not None:
            return self.stopped_ms
        ends = [s.end_ms for t in self.tracks for s in t.segments if s.end_ms is not None]
        return int(max(ends)) if ends else self.started_ms

    @property
    def duration(self) -> float:
        return max(0.0, (self.end_ms - self.started_ms) / 1000.0)

    @property
    def visible(self) -> bool:
        return self.consent.state in VISIBLE_CONSENT

    def track(self, key: str) -> TrackEntry | None:
        return next((t for t in self.tracks if t.key == key), None)

    def main_video(self) -> TrackEntry | None:
        """The laparoscope if recorded, else the first video track with media."""
        videos = [
            t for t in self.tracks if t.kind == "video" and any(s.started for s in t.segments)
        ]
        for track in videos:
            if track.source == "laparoscope":
                return track
        return videos[0] if videos else None

    def files(self) -> list[str]:
        return [s.file for t in self.tracks for s in t.segments]

    # -- (de)serialization -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "id": self.id,
            "room": self.room,
            "state": self.state,
            "procedure": self.procedure,
            "hospital": self.hospital,
            "tags": list(self.tags),
            "consent": asdict(self.consent),
            "started_ms": self.started_ms,
            "stopped_ms": self.stopped_ms,
            "duration": round(self.duration, 3),
            "started_by": dict(self.started_by),
            "node": self.node,
            "participants": [asdict(p) for p in self.participants],
            "tracks": [t.to_json() for t in self.tracks],
            "chapters": [asdict(c) for c in self.chapters],
            "errors": list(self.errors),
            "events": self.events,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("version") != VERSION:
            raise ValueError(f"manifest version {data.get('version')!r} is not {VERSION}")
        return cls(
            id=check_recording_id(data["id"]),
            room=str(data["room"]),
            started_ms=int(data["started_ms"]),
            node=str(data.get("node", "")),
            state=str(data.get("state", "recording")),
            procedure=str(data.get("procedure", "")),
            hospital=str(data.get("hospital", "")),
            tags=[str(t) for t in data.get("tags", [])],
            consent=Consent(**data.get("consent", {})),
            stopped_ms=data.get("stopped_ms"),
            started_by=dict(data.get("started_by", {})),
            participants=[ParticipantEntry(**p) for p in data.get("participants", [])],
            tracks=[TrackEntry.from_json(t) for t in data.get("tracks", [])],
            chapters=[Chapter(**c) for c in data.get("chapters", [])],
            errors=list(data.get("errors", [])),
            events=check_file_name(str(data.get("events", EVENTS))),
        )

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / MANIFEST
        return cls.from_json(json.loads(path.read_text()))

    def save(self, directory: str | Path) -> None:
        """Atomic replace: a crash leaves the old or the new manifest, never half of one."""
        replace_private(Path(directory) / MANIFEST, json.dumps(self.to_json(), indent=1))
