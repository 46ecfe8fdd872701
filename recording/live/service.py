"""RecordingService: a node's recordings. Starts and stops them per room, feeds their event
logs, applies the room policy, repairs what a crash left, and holds the store the library reads.

It knows tracks (media) and plain event dicts; the Socket.IO side lives in
signaling/sio/recording.py. Media is per node, so a room's recording lives on the node that
forwards its media; every node's event listeners see the room's annotations and vitals (they
come through the room bus), and only the node recording the room writes them down.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orbridge.media.router import PublishedTrack
from orbridge.recording.library.store import RecordingStore
from orbridge.recording.live.room_recording import RoomRecording, error_code, now_ms, public_message
from orbridge.recording.manifest import Consent, Manifest, Segment, new_recording_id
from orbridge.rooms.errors import DomainError
from orbridge.rooms.tasks import Tasks

logger = logging.getLogger("orbridge.recording")

__all__ = ["RecordingListener", "RecordingService", "StartRequest"]

POLICY = {"identity": "policy", "name": "Room policy", "role": ""}


@dataclass(frozen=True)
class StartRequest:
    by: dict[str, str]  # identity, name, role
    consent: str
    consent_note: str = ""
    procedure: str = ""
    hospital: str = ""
    tags: tuple[str, ...] = ()


class RecordingListener:
    """What the signaling side is told (all called on the event loop)."""

    async def recording_started(self, recording: RoomRecording) -> None: ...

    async def recording_stopped(self, manifest: Manifest, reason: str, by: str = "") -> None: ...

    def recording_error(self, room: str, recording_id: str, code: str, message: str) -> None: ...


class RecordingService:
    def __init__(
        self,
        directory: str | Path,
        node_id: str,
        *,
        policy: list[str] | None = None,
        policy_consent: str = "pending",
        tracks_of: Callable[[str], list[PublishedTrack]] | None = None,
        participants_of: Callable[[str], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.node_id = node_id
        self.store = RecordingStore(self.directory)
        self.policy = list(policy or [])
        self.policy_consent = policy_consent
        self.tracks_of = tracks_of or (lambda room: [])
        self.participants_of = participants_of or (lambda room: [])
        self.active: dict[str, RoomRecording] = {}
        self.listeners: list[RecordingListener] = []
        self.counts = {"started": 0, "stopped": 0, "errors": 0, "repaired": 0}
        self.error_counts: dict[str, int] = {}
        self._starting: dict[str, asyncio.Task[RoomRecording]] = {}
        self._tasks = Tasks("recording", logger)

    # -- start / stop ----------------------------------------------------------------------

    def recording(self, room: str) -> RoomRecording | None:
        return self.active.get(room)

    async def start(self, room: str, request: StartRequest) -> RoomRecording:
        """Start recording `room` (DomainError `already_recording`, `recording_failed`)."""
        if room in self.active or room in self._starting:
            raise DomainError("already_recording", f"room {room} is already being recorded")
        task = asyncio.get_running_loop().create_task(self._start(room, request))
        self._starting[room] = task
        try:
            return await task
        finally:
            self._starting.pop(room, None)

    async def _start(self, room: str, request: StartRequest) -> RoomRecording:
        started = now_ms()
        manifest = Manifest(
            id=new_recording_id(room, started), room=room, started_ms=started, node=self.node_id,
            procedure=request.procedure, hospital=request.hospital, tags=list(request.tags),
            consent=Consent(request.consent, request.consent_note, started, request.by["identity"]),
            started_by=dict(request.by),
        )  # fmt: skip
        recording = RoomRecording(
            manifest,
            self.store.directory(manifest.id),
            on_error=lambda code, message: self._error(room, manifest.id, code, message),
        )
        try:
            await recording.open()
        except OSError as exc:
            code = error_code(exc)
            self._count_error(code)
            logger.error("recording of room %s could not start: %s", room, exc)
            raise DomainError("recording_failed", public_message("start", code)) from exc
        self.active[room] = recording
        self.counts["started"] += 1
        recording.log("recording_started", started, id=manifest.id, by=request.by["identity"])
        for participant in self.participants_of(room):
            recording.participant_joined(participant, started)
        for track in self.tracks_of(room):
            recording.add_track(track)
        logger.info("recording %s of room %s started by %s", manifest.id, room,
                    request.by["identity"])  # fmt: skip
        for listener in self.listeners:
            await listener.recording_started(recording)
        return recording

    async def stop(self, room: str, by: str, reason: str = "stopped") -> Manifest:
        starting = self._starting.get(room)
        if starting is not None:
            with contextlib.suppress(DomainError):
                await starting
        recording = self.active.pop(room, None)
        if recording is None:
            raise DomainError("not_recording", f"room {room} is not being recorded")
        manifest = await recording.stop(by, reason)
        self.counts["stopped"] += 1
        logger.info("recording %s stopped (%s): %.1f s", manifest.id, reason, manifest.duration)
        for listener in self.listeners:
            await listener.recording_stopped(manifest, reason, by)
        return manifest

    async def close(self) -> None:
        """Finish every recording (server shutdown): complete files, not interrupted ones."""
        for room in list(self.active):
            with contextlib.suppress(DomainError):
                await self.stop(room, "server", "server_shutdown")

    # -- hooks: media ----------------------------------------------------------------------

    def track_started(self, track: PublishedTrack) -> None:
        recording = self.active.get(track.room)
        if recording is not None:
            recording.add_track(track)
        elif track.room not in self._starting and self._policy_matches(track.room):
            # The room policy records from the first track (start() adds the room's tracks).
            self._tasks.spawn(self._policy_start(track.room), name=f"policy:{track.room}")

    async def track_ended(self, track: PublishedTrack, reason: str) -> None:
        recording = self.active.get(track.room)
        if recording is not None:
            await recording.track_ended(track, reason)

    def _policy_matches(self, room: str) -> bool:
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.policy)

    async def _policy_start(self, room: str) -> None:
        request = StartRequest(by=dict(POLICY), consent=self.policy_consent)
        try:
            await self.start(room, request)
        except DomainError as exc:
            if exc.code != "already_recording":
                logger.error("policy recording of %s failed: %s", room, exc.message)

    # -- hooks: room events (annotation bus, vitals bus, presence) ---------------------------

    async def on_annotation_message(self, message: dict[str, Any]) -> None:
        recording = self.active.get(message.get("room", ""))
        if recording is None:
            return
        if message["type"] == "annotation":
            recording.log("annotation", annotation=message["annotation"])
        elif message["type"] == "annotation_removed":
            recording.log("annotation_removed", ids=message["ids"], by=message.get("by", ""),
                          reason=message.get("reason", ""))  # fmt: skip

    async def on_vitals_message(self, message: dict[str, Any]) -> None:
        recording = self.active.get(message.get("room", ""))
        if recording is None:
            return
        kind = message.get("type")
        if kind == "vitals":
            recording.log("vitals", batch=message["batch"])
        elif kind in ("alarm_raised", "alarm_cleared"):
            recording.log(kind, alarm=message["alarm"])
        elif kind == "limits":
            recording.log("limits", limits=message["limits"])

    def participant_joined(self, room: str, public: dict[str, Any]) -> None:
        recording = self.active.get(room)
        if recording is not None:
            recording.participant_joined(public)

    def participant_left(self, room: str, identity: str, reason: str) -> None:
        recording = self.active.get(room)
        if recording is not None:
            recording.participant_left(identity, reason)

    def participant_updated(self, room: str, public: dict[str, Any]) -> None:
        recording = self.active.get(room)
        if recording is not None:
            recording.log("participant_updated", participant=public)

    # -- crash repair ----------------------------------------------------------------------

    async def repair(self) -> list[str]:
        """Mark this node's recordings left in `recording` by a crash as `interrupted`, with
        their segments measured from the sidecars and files. Returns their ids."""
        repaired = await asyncio.to_thread(self._repair_sync)
        self.counts["repaired"] += len(repaired)
        return repaired

    def _repair_sync(self) -> list[str]:
        repaired = []
        for manifest in self.store.list():
            if manifest.state != "recording" or manifest.node not in ("", self.node_id):
                continue
            directory = self.store.directory(manifest.id)
            for track in manifest.tracks:
                track.segments = [_measured(directory, s) for s in track.segments]
                track.segments += _unlisted_segments(directory, track.key, track.segments)
            manifest.state = "interrupted"
            manifest.stopped_ms = manifest.end_ms
            for entry in manifest.participants:
                if entry.left_ms is None:
                    entry.left_ms = manifest.stopped_ms
            manifest.save(directory)
            repaired.append(manifest.id)
            logger.warning("recording %s was interrupted (server stopped); repaired", manifest.id)
        return repaired

    # -- errors and helpers ------------------------------------------------------------------

    def _error(self, room: str, recording_id: str, code: str, message: str) -> None:
        self._count_error(code)
        for listener in self.listeners:
            listener.recording_error(room, recording_id, code, message)

    def _count_error(self, code: str) -> None:
        self.counts["errors"] += 1
        self.error_counts[code] = self.error_counts.get(code, 0) + 1

    def stats(self) -> dict[str, int]:
        totals = {"active": len(self.active), **self.counts}
        recorders = [r for rec in self.active.values() for r in rec.recorders.values()]
        totals["bytes_written"] = sum(r.stats.bytes_written for r in recorders)
        totals["packets_dropped"] = sum(r.stats.dropped for r in recorders)
        totals["events_dropped"] = sum(
            rec.log_stats.get("dropped", 0) for rec in self.active.values()
        )
        return totals


def _measured(directory: Path, segment: Segment) -> Segment:
    """A segment as its sidecar and file say after a crash (duration measured with PyAV)."""
    sidecar = directory / (segment.file + ".json")
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(sidecar.read_text())
        segment = Segment.from_json({**data, "file": segment.file, "track_id": segment.track_id})
    duration = _probe_duration(directory / segment.file)
    if duration is not None:
        segment.duration = duration
    return segment


def _unlisted_segments(directory: Path, key: str, known: list[Segment]) -> list[Segment]:
    """Segment files a crash left before the manifest named them."""
    names = {s.file for s in known}
    found = []
    for sidecar in sorted(directory.glob(f"{key}-[0-9][0-9][0-9].*.json")):
        file = sidecar.name[: -len(".json")]
        if file in names:
            continue
        with contextlib.suppress(OSError, ValueError, TypeError):
            data = json.loads(sidecar.read_text())
            segment = Segment.from_json({**data, "file": file, "track_id": ""})
            segment.duration = _probe_duration(directory / file) or segment.duration
            found.append(segment)
    return found


def _probe_duration(path: Path) -> float | None:
    """Seconds of media in a (possibly truncated) file: the last decodable packet's end."""
    import av

    end = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams[0]
            for packet in container.demux(stream):
                if packet.pts is not None and packet.time_base is not None:
                    stop = packet.pts + (packet.duration or 0)
                    end = float(stop * packet.time_base)
    except (av.error.FFmpegError, OSError, IndexError):
        pass  # a torn tail: what was read before it counts
    return end
