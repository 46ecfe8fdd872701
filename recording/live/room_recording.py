"""One room's recording: a TrackRecorder per published source, the event log, the manifest.

A source is (participant, source label): when its publisher reconnects, the new track's
forwarder becomes a new segment of the same source. Everything that touches the disk runs in
a thread (segment writers, the event log, manifest saves), so a stalled or full disk costs
data, never the event loop; failures are reported through ``on_error`` once per cause.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orbridge.media.router import PublishedTrack
from orbridge.recording.eventlog import EventLog
from orbridge.recording.files import make_private_dir, replace_private
from orbridge.recording.live.recorder import TrackRecorder
from orbridge.recording.live.writer import (
    CODECS,
    DEFAULT_WRITER_QUEUE,
    SegmentInfo,
    normalize_codec,
)
from orbridge.recording.manifest import (
    MANIFEST,
    Chapter,
    Manifest,
    ParticipantEntry,
    Segment,
    TrackEntry,
)
from orbridge.rooms.tasks import Tasks

logger = logging.getLogger("orbridge.recording")

__all__ = ["RoomRecording", "error_code"]

ErrorCallback = Callable[[str, str], None]
SAVE_INTERVAL = 5.0  # seconds between manifest refreshes while recording (durations grow)


def error_code(exc: BaseException) -> str:
    """A protocol error code for a write failure."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission_denied"
    return "write_failed"


# What clients and the manifest are told: no file name, path or exception text (the log has them).
ERROR_MESSAGES = {
    "disk_full": "the recording disk is full",
    "permission_denied": "the server may not write to the recording folder",
    "write_failed": "the recording could not be written",
}


def public_message(part: str, code: str) -> str:
    return f"{part}: {ERROR_MESSAGES.get(code, ERROR_MESSAGES['write_failed'])}"


def now_ms() -> int:
    return int(time.time() * 1000)


class RoomRecording:
    """Created by :class:`~recording.live.service.RecordingService`; call :meth:`open` first."""

    def __init__(
        self,
        manifest: Manifest,
        directory: Path,
        *,
        on_error: ErrorCallback | None = None,
        writer_queue_size: int = DEFAULT_WRITER_QUEUE,
    ) -> None:
        self.manifest = manifest
        self.directory = directory
        self.on_error = on_error
        self.writer_queue_size = writer_queue_size
        self.recorders: dict[str, TrackRecorder] = {}
        self._segment_tracks: dict[str, list[str]] = {}  # key -> track id of each segment
        self._log: EventLog | None = None
        self._dirty = False
        self._saver: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tasks = Tasks(f"recording {manifest.id}", logger)
        self.unsaved = False  # stopped, and the final manifest not written yet
        self._logged: set[tuple[str, str]] = set()
        self._error_codes: set[str] = set()
        self.stopped = False

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def room(self) -> str:
        return self.manifest.room

    async def open(self) -> None:
        """Create the directory and write the first manifest (OSError if the disk refuses)."""
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(make_private_dir, self.directory, exist_ok=False)
        await asyncio.to_thread(self.manifest.save, self.directory)
        self._log = EventLog(
            self.directory / self.manifest.events, loop=loop, on_error=self._log_failed
        )
        self._ticker = loop.create_task(self._tick(), name=f"recording:{self.id}:manifest")

    # -- the event log ---------------------------------------------------------------------

    def log(self, kind: str, t: int | None = None, **data: Any) -> None:
        if self._log is not None and not self.stopped:
            self._log.append({"t": now_ms() if t is None else t, "type": kind, **data})

    @property
    def log_stats(self) -> dict[str, int]:
        return self._log.stats.snapshot() if self._log is not None else {}

    # -- tracks ----------------------------------------------------------------------------

    def add_track(self, track: PublishedTrack) -> None:
        """Record a newly published track (a new segment if its source was recorded before)."""
        if self.stopped:
            return
        key = f"{track.source}-{track.owner}"
        try:
            codec = normalize_codec(track.codec or track.forwarder.codec or "")
        except ValueError as exc:
            self._report("codec_not_recordable", f"{track.source} of {track.owner}: {exc}")
            return
        entry = self.manifest.track(key)
        if entry is None:
            entry = TrackEntry(key, track.owner, track.source, track.kind, codec)
            self.manifest.tracks.append(entry)
        recorder = self.recorders.get(key)
        if recorder is None:
            recorder = TrackRecorder(
                track.forwarder, self.directory, key, codec,
                writer_queue_size=self.writer_queue_size,
                on_error=lambda exc, key=key: self._writer_failed(key, exc),
            )  # fmt: skip
            self.recorders[key] = recorder
            self._segment_tracks[key] = [track.id]
            recorder.start()
        else:
            self._segment_tracks[key].append(track.id)
            self._tasks.spawn(recorder.new_segment(track.forwarder), name=f"segment:{key}")
        # The recorder names segment n of a source "<key>-<n>": known before its task runs.
        file = f"{key}-{len(self._segment_tracks[key]):03d}{CODECS[codec].suffix}"
        self.log("track_published", track=track.public(), file=file)
        self.save_soon()

    async def track_ended(self, track: PublishedTrack, reason: str) -> None:
        key = f"{track.source}-{track.owner}"
        recorder = self.recorders.get(key)
        if recorder is not None and not self.stopped:
            # Finishing closes the file (trailer, duration) at once: a publisher that never
            # comes back leaves a complete segment.
            await recorder.finish_segment()
        self.log("track_ended", track=track.public(), reason=reason)
        self.save_soon()

    # -- room events -----------------------------------------------------------------------

    def participant_joined(self, public: dict[str, Any], t: int | None = None) -> None:
        t = now_ms() if t is None else t
        entries = self.manifest.participants
        if not any(p.identity == public["identity"] and p.left_ms is None for p in entries):
            entries.append(ParticipantEntry(public["identity"], public.get("name", ""),
                                            public.get("role", ""), t))  # fmt: skip
        self.log("participant_joined", t, participant=public)
        self.save_soon()

    def participant_left(self, identity: str, reason: str) -> None:
        t = now_ms()
        for entry in self.manifest.participants:
            if entry.identity == identity and entry.left_ms is None:
                entry.left_ms = t
        self.log("participant_left", t, identity=identity, reason=reason)
        self.save_soon()

    def chapter(self, title: str, by: str) -> Chapter:
        chapter = Chapter(now_ms(), title, by)
        self.manifest.chapters.append(chapter)
        self.log("chapter", chapter.t, title=title, by=by)
        self.save_soon()
        return chapter

    # -- stopping --------------------------------------------------------------------------

    async def stop(self, by: str, reason: str) -> Manifest:
        if self.stopped:
            return self.manifest
        await self._tasks.wait()  # pending new_segment()s first
        for recorder in self.recorders.values():
            await recorder.stop()
        stopped_ms = now_ms()
        self.log("recording_stopped", stopped_ms, by=by, reason=reason)
        self.stopped = True
        if self._ticker is not None:
            self._ticker.cancel()
        manifest = self.manifest
        manifest.stopped_ms = stopped_ms
        manifest.state = "complete"
        for entry in manifest.participants:
            if entry.left_ms is None:
                entry.left_ms = stopped_ms
        if self._log is not None:
            await self._log.close()
        if not await self._save_now():
            # The disk is full (or away): the manifest on disk still says "recording". Keep
            # trying, so that it says "complete" as soon as the disk takes it again.
            self.unsaved = True
            self._tasks.spawn(self._save_until_written(), name=f"final-save:{self.id}")
        return manifest

    async def _save_until_written(self, interval: float = 2.0) -> None:
        while True:
            await asyncio.sleep(interval)
            if await self._save_now(quiet=True):
                self.unsaved = False
                logger.info("recording %s: manifest written after the disk came back", self.id)
                return

    async def abandon(self) -> None:
        """Stop retrying (server shutdown)."""
        await self._tasks.cancel()

    # -- manifest --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Copy the writers' segment info (durations, counts, errors) into the manifest."""
        for key, recorder in self.recorders.items():
            entry = self.manifest.track(key)
            if entry is None:
                continue
            tracks = self._segment_tracks.get(key, [])
            entry.segments = [
                _segment(info, tracks[i] if i < len(tracks) else "")
                for i, info in enumerate(recorder.segments)
            ]
            sized = next((s for s in entry.segments if s.width), None)
            if sized is not None:
                entry.width, entry.height = sized.width, sized.height

    def save_soon(self) -> None:
        self._dirty = True
        if self._saver is None or self._saver.done():
            self._saver = self._tasks.spawn(self._save_loop(), name=f"save:{self.id}")

    async def _save_loop(self) -> None:
        while self._dirty:
            self._dirty = False
            await self._save_now()

    async def _save_now(self, quiet: bool = False) -> bool:
        self.refresh()
        text = json.dumps(self.manifest.to_json(), indent=1)
        try:
            await asyncio.to_thread(_write_atomic, self.directory / MANIFEST, text)
        except OSError as exc:
            if not quiet:
                self._report(error_code(exc), "manifest", exc)
            return False
        return True

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL)
            self.save_soon()

    # -- errors ----------------------------------------------------------------------------

    def _writer_failed(self, key: str, exc: BaseException) -> None:
        self._report(error_code(exc), key, exc)
        self.save_soon()

    def _log_failed(self, exc: BaseException) -> None:
        self._report(error_code(exc), "event log", exc)

    def _report(self, code: str, part: str, exc: BaseException) -> None:
        message = public_message(part, code)
        first = code not in self._error_codes
        # the log too says it once per cause and part, not at every periodic save
        level = logging.ERROR if first or (code, part) not in self._logged else logging.DEBUG
        self._logged.add((code, part))
        logger.log(level, "recording %s: %s: %s: %s", self.id, code, part, exc)
        self._error_codes.add(code)
        if not first:  # once per cause: a full disk fails every writer, one after the other
            return
        self.manifest.errors.append({"t": now_ms(), "code": code, "message": message})
        self.log("recording_error", code=code, message=message)
        if self.on_error is not None:
            self.on_error(code, message)


def _segment(info: SegmentInfo, track_id: str) -> Segment:
    return Segment.from_json({**info.to_json(), "file": Path(info.path).name,
                              "track_id": track_id})  # fmt: skip


def _write_atomic(path: Path, text: str) -> None:
    replace_private(path, text)
