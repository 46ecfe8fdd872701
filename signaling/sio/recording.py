"""Recording over the protocol: `start_recording`, `stop_recording`, `mark_chapter` in;
`recording_started`, `recording_stopped`, `recording_error`, `chapter_marked` out.

Binds the node's RecordingService to the namespace (presence changes, the snapshot's
`recording`), to the media router (tracks become segments), to the annotation and vitals hubs
(the event log) and to the room registry (a consultation that ends stops its recording), and
counts what happens in /metrics.
"""

from __future__ import annotations

from typing import Any

from orbridge.media.router import MediaRouter
from orbridge.recording.live.room_recording import RoomRecording
from orbridge.recording.live.service import RecordingListener, RecordingService, StartRequest
from orbridge.recording.manifest import Manifest
from orbridge.rooms.annotations.hub import AnnotationHub
from orbridge.rooms.errors import DomainError
from orbridge.rooms.participant import Participant
from orbridge.rooms.roles import Grant
from orbridge.rooms.room import Room
from orbridge.rooms.vitals.hub import VitalsHub
from orbridge.signaling.sio import schemas
from orbridge.signaling.sio.gate import EventSpec
from orbridge.signaling.sio.namespace import RoomNamespace, sio_room


def _public(recording: RoomRecording) -> dict[str, Any]:
    manifest = recording.manifest
    return {
        "id": manifest.id,
        "started_ms": manifest.started_ms,
        "started_by": manifest.started_by.get("identity", ""),
        "policy": manifest.started_by.get("identity") == "policy",
        "consent": manifest.consent.state,
    }


class RecordingEvents(RecordingListener):
    def __init__(
        self,
        namespace: RoomNamespace,
        service: RecordingService,
        router: MediaRouter,
        annotations: AnnotationHub,
        vitals: VitalsHub,
    ) -> None:
        self.namespace = namespace
        self.service = service
        namespace.register(
            EventSpec("start_recording", schemas.StartRecording, self.on_start_recording,
                      grant=Grant.RECORD, max_bytes=4096)
        )  # fmt: skip
        namespace.register(
            EventSpec("stop_recording", schemas.Empty, self.on_stop_recording, grant=Grant.RECORD)
        )
        namespace.register(
            EventSpec("mark_chapter", schemas.MarkChapter, self.on_mark_chapter, max_bytes=1024)
        )
        namespace.snapshot_parts.append(self._snapshot)
        namespace.presence_hooks.append(self._presence)
        service.listeners.append(self)
        service.tracks_of = router.tracks
        service.participants_of = self._participants_of
        router.track_started.append(service.track_started)
        router.track_ended.append(service.track_ended)
        annotations.listeners.append(service.on_annotation_message)
        vitals.listeners.append(service.on_vitals_message)
        # before the face removes the members: the recording ends with the consultation
        namespace.rooms.registry.close_hooks.insert(0, self._room_closed)

    def _participants_of(self, room: str) -> list[dict[str, Any]]:
        return [p.public() for p in self.namespace.rooms.members(room)]

    async def _room_closed(self, room: Room, reason: str, by: str) -> None:
        if self.service.recording(room.name) is not None:
            why = "consultation_ended" if reason == "ended" else "room_empty"
            await self.service.stop(room.name, by or "server", why)

    def _snapshot(self, me: Participant) -> dict[str, Any]:
        recording = self.service.recording(me.room)
        return {"recording": _public(recording) if recording is not None else None}

    def _presence(self, change: str, participant: Participant, reason: str) -> None:
        if change == "joined":
            self.service.participant_joined(participant.room, participant.public())
        elif change == "left":
            self.service.participant_left(participant.room, participant.identity, reason)
        else:
            self.service.participant_updated(participant.room, participant.public())

    # -- inbound -------------------------------------------------------------------------

    async def on_start_recording(self, sid: str, message: schemas.StartRecording) -> dict[str, Any]:
        me = self.namespace.me(sid)
        request = StartRequest(
            by={"identity": me.identity, "name": me.name, "role": me.role.value},
            consent=message.consent, consent_note=message.consent_note,
            procedure=message.procedure, hospital=message.hospital, tags=tuple(message.tags),
        )  # fmt: skip
        recording = await self.service.start(me.room, request)
        return _public(recording)

    async def on_stop_recording(self, sid: str, message: schemas.Empty) -> dict[str, Any]:
        me = self.namespace.me(sid)
        manifest = await self.service.stop(me.room, me.identity)
        return _stopped(manifest, "stopped")

    async def on_mark_chapter(self, sid: str, message: schemas.MarkChapter) -> dict[str, Any]:
        me = self.namespace.me(sid)
        if not {Grant.RECORD, Grant.ANNOTATE} & me.grants:
            raise DomainError("forbidden", "only moderators and experts mark chapters")
        recording = self.service.recording(me.room)
        if recording is None:
            raise DomainError("not_recording", f"room {me.room} is not being recorded")
        chapter = recording.chapter(message.title, me.identity)
        payload = {"id": recording.id, "t": chapter.t, "title": chapter.title, "by": chapter.by}
        await self.namespace.emit("chapter_marked", payload, room=sio_room(me.room))
        return payload

    # -- RecordingListener -----------------------------------------------------------------

    async def recording_started(self, recording: RoomRecording) -> None:
        self.namespace.metrics.recordings.labels("started").inc()
        manifest = recording.manifest
        self.namespace.audit.append(
            "recording_started", recording=manifest.id, room=manifest.room,
            by=manifest.started_by.get("identity", ""), by_role=manifest.started_by.get("role"),
            consent=manifest.consent.state, procedure=manifest.procedure,
        )  # fmt: skip
        await self.namespace.emit(
            "recording_started", _public(recording), room=sio_room(recording.room)
        )

    async def recording_stopped(self, manifest: Manifest, reason: str, by: str = "") -> None:
        self.namespace.metrics.recordings.labels("stopped").inc()
        self.namespace.audit.append(
            "recording_stopped",
            recording=manifest.id,
            room=manifest.room,
            by=by,
            reason=reason,
            duration=round(manifest.duration, 3),
        )
        await self.namespace.emit(
            "recording_stopped", _stopped(manifest, reason), room=sio_room(manifest.room)
        )

    def recording_error(self, room: str, recording_id: str, code: str, message: str) -> None:
        self.namespace.metrics.recording_errors.labels(code).inc()
        payload = {"id": recording_id, "code": code, "message": message}
        self.namespace.tasks.spawn(
            self.namespace.emit("recording_error", payload, room=sio_room(room)),
            name=f"recording_error:{room}",
        )


def _stopped(manifest: Manifest, reason: str) -> dict[str, Any]:
    return {
        "id": manifest.id,
        "reason": reason,
        "duration": round(manifest.duration, 3),
        "files": manifest.files(),
        "errors": list(manifest.errors),
    }
