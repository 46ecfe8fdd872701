"""RecordingService: a node's recordings. Starts and stops them per room, feeds their event
logs, applies the room policy, repairs what a crash left (its own, and those of nodes that
died), and holds the store the library reads.

It knows tracks (media) and plain event dicts; the Socket.IO side lives in
signaling/sio/recording.py. Media is per node, so a room's recording lives on the node that
forwards its media; every node's event listeners see the room's annotations and vitals (they
come through the room bus), and only the node recording the room writes them down.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from orbridge.media.router import PublishedTrack
from orbridge.recording.files import hold_lock, lock_held, make_private_dir
from orbridge.recording.library.store import RecordingStore
from orbridge.recording.live.room_recording import (
    SAVE_INTERVAL,
    RoomRecording,
    error_code,
    now_ms,
    public_message,
)
from orbridge.recording.manifest import (
    Consent,
    Manifest,
    Segment,
    check_recording_id,
    new_recording_id,
)
from orbridge.rooms.errors import DomainError
from orbridge.rooms.tasks import Tasks

logger = logging.getLogger("orbridge.recording")

__all__ = ["RecordingListener", "RecordingService", "StartRequest"]

POLICY = {"identity": "policy", "name": "Room policy", "role": ""}

NODES_DIR = ".nodes"  # <recordings_dir>/.nodes/<node>.lock: held by each node while it runs
REPAIR_INTERVAL = 30.0  # seconds between passes over other nodes' recordings
# A recording is someone else's to repair only after none of its files has changed this long:
# a live one rewrites its manifest every SAVE_INTERVAL (and its segments with every frame).
REPAIR_QUIET = 2 * SAVE_INTERVAL
REPAIR_BATCH = 8  # recordings repaired per periodic pass at most (each is probed with PyAV)

LiveNodes = Callable[[], Awaitable[Collection[str]]]


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
        live_nodes: LiveNodes | None = None,
        repair_interval: float = REPAIR_INTERVAL,
        repair_quiet: float = REPAIR_QUIET,
    ) -> None:
        self.directory = Path(directory)
        self.node_id = node_id
        # Which node ids are alive (presence); None: others' recordings are never repaired.
        self.live_nodes = live_nodes
        self.repair_interval = repair_interval
        self.repair_quiet = repair_quiet
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
        self._unsaved: set[RoomRecording] = set()
        self._lock: BinaryIO | None = None  # our liveness lock in <directory>/.nodes
        self._lock_refused = False  # another running process holds our node id's lock
        self._settled: set[str] = set()  # recording ids known not to be `recording`
        self._unreadable: set[str] = set()  # logged once
        self._repair_failed: set[str] = set()  # logged once
        self._repairer: asyncio.Task[None] | None = None
        self._presence_known = True

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
        if self._lock is None:  # others must see we are alive before our manifest appears
            await asyncio.to_thread(self._claim_sync)
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
        if recording.unsaved:
            self._unsaved.add(recording)  # its manifest is retried until the disk takes it
        self.counts["stopped"] += 1
        logger.info("recording %s stopped (%s): %.1f s", manifest.id, reason, manifest.duration)
        for listener in self.listeners:
            await listener.recording_stopped(manifest, reason, by)
        return manifest

    async def close(self) -> None:
        """Finish every recording (server shutdown): complete files, not interrupted ones."""
        if self._repairer is not None:
            self._repairer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repairer
            self._repairer = None
        for room in list(self.active):
            with contextlib.suppress(DomainError):
                await self.stop(room, "server", "server_shutdown")
        for recording in list(self._unsaved):
            if recording.unsaved:  # repaired at the next start (its manifest says recording)
                logger.error("recording %s: manifest still not written at shutdown", recording.id)
            await recording.abandon()
        self._unsaved.clear()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

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
    #
    # A recording a crash left says `recording` in its manifest. It is repaired (marked
    # `interrupted`, its segments measured from the sidecars and files) by:
    # - its own node when it starts again: the node id is stable (claim_node_id), and the
    #   node's lock in <directory>/.nodes proves no other running process records under it;
    # - any node, at start and every `repair_interval`, once its node is dead: not alive in
    #   presence (`live_nodes`), not holding its lock here, and none of its files changed for
    #   `repair_quiet` seconds. A recording whose node is alive is never touched.

    async def repair(self) -> list[str]:
        """At start, before anything records: repair this node's crashed recordings and those
        of dead nodes. Returns their ids."""
        own = True
        if await asyncio.to_thread(self.directory.is_dir):
            own = await asyncio.to_thread(self._claim_sync) is not False
        live = await self._live()
        return await self._repair(own=own, live=live, limit=None)

    async def repair_dead(self) -> list[str]:
        """One periodic pass: repair the crashed recordings of nodes that died since (at most
        REPAIR_BATCH; the rest wait for the next pass). Never this node's own: they are
        repaired at its start, and one it is starting now must not be taken for one."""
        live = await self._live()
        if live is None:
            return []
        return await self._repair(own=False, live=live, limit=REPAIR_BATCH)

    def start_repairs(self) -> None:
        """Run repair_dead every `repair_interval` seconds until close() (0: never)."""
        if self._repairer is None and self.repair_interval > 0:
            self._repairer = self._tasks.spawn(self._repair_loop(), name="recording:repair")

    async def _repair_loop(self) -> None:
        while True:
            await asyncio.sleep(self.repair_interval)
            try:
                await self.repair_dead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next pass tries again
                logger.error("recording repair pass failed: %s", exc, exc_info=exc)

    async def _live(self) -> set[str] | None:
        """The ids of the live nodes; None when nobody can say (no presence, an outage)."""
        if self.live_nodes is None:
            return None
        try:
            live = set(await self.live_nodes())
        except Exception as exc:
            if self._presence_known:
                logger.warning("recording repair: presence unavailable (%s): other nodes' "
                               "recordings wait until it answers", exc)  # fmt: skip
            self._presence_known = False
            return None
        self._presence_known = True
        return live

    async def _repair(self, *, own: bool, live: set[str] | None, limit: int | None) -> list[str]:
        active = frozenset(r.id for r in self.active.values())  # read on the event loop
        repaired = await asyncio.to_thread(self._repair_sync, own, live, limit, active)
        self.counts["repaired"] += len(repaired)
        return repaired

    def _lock_path(self, node_id: str) -> Path:
        name = hashlib.sha256(node_id.encode()).hexdigest()[:32]  # any node id, a safe name
        return self.directory / NODES_DIR / f"{name}.lock"

    def _claim_sync(self) -> bool | None:
        """Hold this node's lock in the recordings directory while it runs: True when held,
        False when another running process holds it (the same node id twice), None when it
        cannot be made (then nothing tells our liveness but presence)."""
        if self._lock is not None:
            return True
        path = self._lock_path(self.node_id)
        try:
            make_private_dir(path.parent)
            # A probe (lock_held) holds it for a moment; once refused, one try per recording.
            deadline = time.monotonic() + (0.0 if self._lock_refused else 0.5)
            while (handle := hold_lock(path)) is None:
                if time.monotonic() > deadline:
                    if not self._lock_refused:
                        logger.error(
                            "another running process records as node %s in %s (two nodes with "
                            "one node id): their recordings are not repaired at this start; "
                            "give every node its own node id", self.node_id, self.directory,
                        )  # fmt: skip
                    self._lock_refused = True
                    return False
                time.sleep(0.02)
            with contextlib.suppress(OSError):
                handle.truncate(0)
                handle.write(f"{self.node_id}\n{os.getpid()}\n".encode())
                handle.flush()
        except OSError as exc:
            logger.warning("recording: cannot hold node lock %s: %s", path, exc)
            return None
        self._lock = handle
        return True

    def _node_alive(self, node: str, live: Collection[str]) -> bool:
        if node in live:
            return True
        try:
            return lock_held(self._lock_path(node))
        except OSError:
            return True  # cannot tell: leave it

    def _quiet(self, directory: Path) -> bool:
        """No file of the recording changed for `repair_quiet` seconds (a clock ahead of ours
        on a shared file system counts as a change)."""
        newest = directory.stat().st_mtime
        with os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        return time.time() - newest >= self.repair_quiet

    def _crashed(self) -> list[tuple[Path, Manifest]]:
        """Recordings whose manifest says `recording`, oldest first; finished ones are not read
        again."""
        found = []
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return []  # nothing recorded yet (a start refuses a file in its place)
        except OSError as exc:
            if "" not in self._unreadable:
                self._unreadable.add("")
                logger.warning("recording repair: cannot list %s: %s", self.directory, exc)
            return []
        for entry in entries:
            name = entry.name
            if name in self._settled or name.startswith(".") or not entry.is_dir():
                continue
            try:
                check_recording_id(name)
                manifest = Manifest.load(entry.path)
            except FileNotFoundError:
                continue  # being created, or not a recording
            except (ValueError, KeyError, TypeError, OSError) as exc:
                if name not in self._unreadable:
                    self._unreadable.add(name)
                    logger.warning("recording repair: skipping %s: %s", name, exc)
                continue
            if manifest.state != "recording":
                self._settled.add(name)
            else:
                found.append((Path(entry.path), manifest))
        found.sort(key=lambda item: item[1].started_ms)
        return found

    def _repair_sync(
        self, own: bool, live: set[str] | None, limit: int | None, active: frozenset[str]
    ) -> list[str]:
        repaired: list[str] = []
        attempts = 0
        for directory, manifest in self._crashed():
            if manifest.id in active:
                continue
            if manifest.node in ("", self.node_id):
                if not own:
                    continue
            elif live is None or self._node_alive(manifest.node, live):
                continue
            else:
                try:
                    if not self._quiet(directory):
                        continue
                except OSError:
                    continue
            if limit is not None and attempts >= limit:
                logger.info("recording repair: more crashed recordings wait for the next pass")
                break
            attempts += 1
            try:
                if self._repair_one(directory):
                    repaired.append(manifest.id)
            except Exception as exc:  # one bad recording never stops the others
                if manifest.id not in self._repair_failed:  # retried each pass, logged once
                    self._repair_failed.add(manifest.id)
                    logger.error("recording %s could not be repaired: %s", manifest.id, exc)
        return repaired

    def _repair_one(self, directory: Path) -> bool:
        """Repair one recording, under a lock two repairing nodes cannot both hold; False when
        another node is repairing it or has (its manifest no longer says `recording`)."""
        lock_path = directory / ".repair.lock"
        lock = hold_lock(lock_path)
        if lock is None:
            return False
        try:
            manifest = Manifest.load(directory)  # again, under the lock
            if manifest.state != "recording":
                self._settled.add(directory.name)
                return False
            for track in manifest.tracks:
                track.segments = [_measured(directory, s) for s in track.segments]
                track.segments += _unlisted_segments(directory, track.key, track.segments)
            manifest.state = "interrupted"
            manifest.stopped_ms = manifest.end_ms
            for entry in manifest.participants:
                if entry.left_ms is None:
                    entry.left_ms = manifest.stopped_ms
            manifest.save(directory)
        finally:
            with contextlib.suppress(OSError):
                lock_path.unlink()
            lock.close()
        self._settled.add(directory.name)
        whose = "this node" if manifest.node in ("", self.node_id) else f"node {manifest.node}"
        logger.warning("recording %s was interrupted (%s stopped while recording); repaired",
                       manifest.id, whose)  # fmt: skip
        return True

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
