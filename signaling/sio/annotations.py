"""Annotations over the protocol: `annotate`, `annotation_undo`, `annotation_clear` in;
`annotation`, `annotation_removed` out. The overlay and its rules live in the domain
(`rooms.annotations.hub.AnnotationHub`); this is schema -> hub -> ack, and the fan-out of what
the hub applied to the room's members on this node."""

from __future__ import annotations

from typing import Any

from orbridge.rooms.annotations.hub import AnnotationHub
from orbridge.rooms.participant import Participant
from orbridge.rooms.roles import Grant
from orbridge.signaling.sio import schemas
from orbridge.signaling.sio.gate import EventSpec
from orbridge.signaling.sio.namespace import RoomNamespace


class AnnotationEvents:
    def __init__(self, namespace: RoomNamespace, hub: AnnotationHub) -> None:
        self.namespace = namespace
        self.hub = hub
        for spec in (
            EventSpec("annotate", schemas.Annotate, self.on_annotate, grant=Grant.ANNOTATE),
            EventSpec("annotation_undo", schemas.Empty, self.on_undo, grant=Grant.ANNOTATE),
            EventSpec("annotation_clear", schemas.AnnotationClear, self.on_clear,
                      grant=Grant.ANNOTATE),
        ):  # fmt: skip
            namespace.register(spec)
        namespace.snapshot_parts.append(self._snapshot)
        namespace.leave_hooks.append(self._left)
        hub.listeners.append(self.deliver)

    def _snapshot(self, me: Participant) -> dict[str, Any]:
        if Grant.SUBSCRIBE_ANNOTATIONS not in me.grants:
            return {}
        return {"overlay": self.hub.snapshot(me.room)}

    async def _left(self, participant: Participant, reason: str) -> None:
        self.hub.forget(participant.sid)

    async def on_annotate(self, sid: str, message: schemas.Annotate) -> dict[str, Any]:
        annotation = await self.hub.annotate(
            self.namespace.me(sid), kind=message.type, track_id=message.track_id,
            points=[list(p) for p in message.points], text=message.text, width=message.width,
            frame=message.frame.model_dump() if message.frame else None, frozen=message.frozen,
            client_id=message.client_id, sent_ms=message.sent_ms,
        )  # fmt: skip
        return {"id": annotation.id, "server_ms": annotation.server_ms, "color": annotation.color}

    async def on_undo(self, sid: str, message: schemas.Empty) -> dict[str, Any]:
        return {"ids": await self.hub.undo(self.namespace.me(sid))}

    async def on_clear(self, sid: str, message: schemas.AnnotationClear) -> dict[str, Any]:
        return {"ids": await self.hub.clear(self.namespace.me(sid), message.scope)}

    async def deliver(self, message: dict[str, Any]) -> None:
        """What the hub applied, to this node's members of the room who see annotations."""
        if message["type"] == "annotation":
            event, payload = "annotation", message["annotation"]
        else:
            event, payload = "annotation_removed", {k: message[k] for k in ("ids", "by", "reason")}
        for p in self.namespace.rooms.members(message["room"]):
            if Grant.SUBSCRIBE_ANNOTATIONS in p.grants:
                await self.namespace.emit(event, payload, to=p.sid, ignore_queue=True)
