"""Annotations over the protocol: `annotate`, `annotation_undo`, `annotation_clear` in;
`annotation`, `annotation_removed` out, through the room bus so every node's clients see them and
every node keeps the room's overlay for late joiners. Recording (#6) listens on the same hub."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orbridge.rooms.annotations.model import Annotation, Overlay, make_annotation
from orbridge.rooms.bus import RoomBus
from orbridge.rooms.errors import DomainError
from orbridge.rooms.participant import Participant
from orbridge.rooms.roles import Grant
from orbridge.signaling.sio import schemas
from orbridge.signaling.sio.gate import EventSpec, TokenBucket
from orbridge.signaling.sio.namespace import RoomNamespace

RATE = 30.0  # annotations a second per sender, sustained (a pointer follows the mouse)
BURST = 60


class AnnotationEvents:
    def __init__(self, namespace: RoomNamespace, bus: RoomBus) -> None:
        self.namespace = namespace
        self.bus = bus
        self.overlays: dict[str, Overlay] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.listeners: list[Any] = []  # e.g. a recording's event log
        # (sid, track id, RTP timestamp it saw) -> the source frame's timestamp (media router)
        self.frame_mapper: Callable[[str, str, int], int | None] | None = None
        for spec in (
            EventSpec("annotate", schemas.Annotate, self.on_annotate, grant=Grant.ANNOTATE),
            EventSpec("annotation_undo", schemas.Empty, self.on_undo, grant=Grant.ANNOTATE),
            EventSpec("annotation_clear", schemas.AnnotationClear, self.on_clear,
                      grant=Grant.ANNOTATE),
        ):  # fmt: skip
            namespace.register(spec)
        namespace.snapshot_parts.append(self._snapshot)
        namespace.leave_hooks.append(self._left)

    async def start(self) -> None:
        await self.bus.start(self._receive)

    async def close(self) -> None:
        await self.bus.close()

    def overlay(self, room: str) -> Overlay:
        overlay = self.overlays.get(room)
        if overlay is None:
            overlay = self.overlays[room] = Overlay()
        return overlay

    def _snapshot(self, me: Participant) -> dict[str, Any]:
        if Grant.SUBSCRIBE_ANNOTATIONS not in me.grants:
            return {}
        return {"overlay": self.overlay(me.room).public()}

    async def _left(self, participant: Participant, reason: str) -> None:
        self.buckets.pop(participant.sid, None)

    def _me(self, sid: str) -> Participant:
        me = self.namespace.rooms.participant(sid)
        assert me is not None  # the gate checked the join
        return me

    async def on_annotate(self, sid: str, message: schemas.Annotate) -> dict[str, Any]:
        me = self._me(sid)
        bucket = self.buckets.get(sid)
        if bucket is None:
            bucket = self.buckets[sid] = TokenBucket(RATE, BURST)
        if not bucket.take():
            raise DomainError("rate_limited", "too many annotations; slow down")
        frame = message.frame.model_dump() if message.frame else None
        if frame is not None and self.frame_mapper is not None:
            # The frame on the recording's clock: replay draws it on exactly that frame.
            frame["source_ts"] = self.frame_mapper(sid, message.track_id, frame["rtp_timestamp"])
        annotation = make_annotation(
            me.room, me.identity, me.name, message.type, message.track_id,
            [list(p) for p in message.points], message.text, message.width,
            frame, message.frozen,
            message.client_id, message.sent_ms,
        )  # fmt: skip
        await self.bus.publish({"type": "annotation", "room": me.room,
                                "annotation": annotation.public()})  # fmt: skip
        return {"id": annotation.id, "server_ms": annotation.server_ms, "color": annotation.color}

    async def on_undo(self, sid: str, message: schemas.Empty) -> dict[str, Any]:
        me = self._me(sid)
        last = self.overlay(me.room).last_of(me.identity)
        if last is None:
            raise DomainError("not_found", "you have no annotation to undo")
        await self._remove(me, [last.id], "undo")
        return {"ids": [last.id]}

    async def on_clear(self, sid: str, message: schemas.AnnotationClear) -> dict[str, Any]:
        me = self._me(sid)
        if message.scope == "all" and Grant.CLEAR_ANNOTATIONS not in me.grants:
            raise DomainError("forbidden", "only a moderator may clear everyone's annotations")
        ids = self.overlay(me.room).of(None if message.scope == "all" else me.identity)
        if ids:
            await self._remove(me, ids, "clear")
        return {"ids": ids}

    async def _remove(self, me: Participant, ids: list[str], reason: str) -> None:
        await self.bus.publish({"type": "annotation_removed", "room": me.room, "ids": ids,
                                "by": me.identity, "reason": reason})  # fmt: skip

    # every node -------------------------------------------------------------------------
    async def _receive(self, message: dict[str, Any]) -> None:
        room = message["room"]
        overlay = self.overlay(room)
        if message["type"] == "annotation":
            annotation = Annotation.from_public(message["annotation"])
            evicted = overlay.add(annotation)
            await self._send(room, "annotation", message["annotation"])
            if evicted:
                removed = {"ids": evicted, "by": "", "reason": "evicted"}
                await self._send(room, "annotation_removed", removed)
                for listener in self.listeners:  # the event log keeps what clients were told
                    await listener({"type": "annotation_removed", "room": room, **removed})
        elif message["type"] == "annotation_removed":
            overlay.remove(message["ids"])
            payload = {k: message[k] for k in ("ids", "by", "reason")}
            await self._send(room, "annotation_removed", payload)
        for listener in self.listeners:
            await listener(message)

    async def _send(self, room: str, event: str, payload: dict[str, Any]) -> None:
        for p in list(self.namespace.rooms.local.values()):
            if p.room == room and Grant.SUBSCRIBE_ANNOTATIONS in p.grants:
                await self.namespace.emit(event, payload, to=p.sid, ignore_queue=True)
