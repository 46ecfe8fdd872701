"""The annotation hub: what experts draw reaches every node's room, and every node keeps the
room's overlay for late joiners.

`annotate`, `undo` and `clear` check and build what a participant asks for and publish it on
the room bus; every node (the sender's too) applies what the bus carries to its Room's overlay
and hands it to its listeners: the face's fan-out to the room's members and a recording's
event log. A message stamped before the room's latest close is dropped (see `RoomRegistry`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from orbridge.rooms.annotations.model import Annotation, make_annotation
from orbridge.rooms.bus import Deliver, RoomBus
from orbridge.rooms.errors import DomainError
from orbridge.rooms.participant import Participant
from orbridge.rooms.ratelimit import TokenBucket
from orbridge.rooms.roles import Grant
from orbridge.rooms.room import RoomRegistry, now_ms

log = logging.getLogger("orbridge.annotations")

RATE = 30.0  # annotations a second per sender, sustained (a pointer follows the mouse)
BURST = 60
# (sid, track id, RTP timestamp the participant saw) -> the source frame's timestamp
FrameMapper = Callable[[str, str, int], int | None]


class AnnotationHub:
    def __init__(self, bus: RoomBus, rooms: RoomRegistry) -> None:
        self.bus = bus
        self.rooms = rooms
        self.listeners: list[Deliver] = []  # every applied change, evictions included
        self.frame_mapper: FrameMapper | None = None
        self._buckets: dict[str, TokenBucket] = {}

    async def start(self) -> None:
        await self.bus.start(self._receive)

    async def close(self) -> None:
        await self.bus.close()

    def snapshot(self, room: str) -> list[dict[str, Any]]:
        current = self.rooms.get(room)
        return current.overlay.public() if current is not None else []

    def forget(self, sid: str) -> None:
        """The connection left: drop its rate limit."""
        self._buckets.pop(sid, None)

    # -- what participants ask for ----------------------------------------------------------

    async def annotate(self, me: Participant, *, kind: str, track_id: str,
                       points: list[list[float]], text: str = "", width: float = 0.006,
                       frame: dict[str, Any] | None = None, frozen: bool = False,
                       client_id: str = "", sent_ms: int | None = None) -> Annotation:  # fmt: skip
        bucket = self._buckets.get(me.sid)
        if bucket is None:
            bucket = self._buckets[me.sid] = TokenBucket(RATE, BURST)
        if not bucket.take():
            raise DomainError("rate_limited", "too many annotations; slow down")
        if frame is not None and self.frame_mapper is not None:
            # The frame on the recording's clock: replay draws it on exactly that frame.
            frame = {**frame, "source_ts": self.frame_mapper(me.sid, track_id,
                                                             frame["rtp_timestamp"])}  # fmt: skip
        annotation = make_annotation(
            me.room, me.identity, me.name, kind, track_id, points, text, width, frame, frozen,
            client_id, sent_ms,
        )  # fmt: skip
        await self.bus.publish({"type": "annotation", "room": me.room, "t": annotation.server_ms,
                                "annotation": annotation.public()})  # fmt: skip
        return annotation

    async def undo(self, me: Participant) -> list[str]:
        room = self.rooms.get(me.room)
        last = room.overlay.last_of(me.identity) if room is not None else None
        if last is None:
            raise DomainError("not_found", "you have no annotation to undo")
        await self._remove(me, [last.id], "undo")
        return [last.id]

    async def clear(self, me: Participant, scope: str) -> list[str]:
        if scope == "all" and Grant.CLEAR_ANNOTATIONS not in me.grants:
            raise DomainError("forbidden", "only a moderator may clear everyone's annotations")
        room = self.rooms.get(me.room)
        ids = room.overlay.of(None if scope == "all" else me.identity) if room is not None else []
        if ids:
            await self._remove(me, ids, "clear")
        return ids

    async def _remove(self, me: Participant, ids: list[str], reason: str) -> None:
        await self.bus.publish({"type": "annotation_removed", "room": me.room, "t": now_ms(),
                                "ids": ids, "by": me.identity, "reason": reason})  # fmt: skip

    # -- every node -------------------------------------------------------------------------

    async def _receive(self, message: dict[str, Any]) -> None:
        name = message.get("room")
        kind = message.get("type")
        if not isinstance(name, str) or not self.rooms.accepts(name, message.get("t")):
            return
        room = self.rooms.open(name)
        told = [message]
        if kind == "annotation":
            evicted = room.overlay.add(Annotation.from_public(message["annotation"]))
            if evicted:
                told.append({"type": "annotation_removed", "room": name, "t": message.get("t"),
                             "ids": evicted, "by": "", "reason": "evicted"})  # fmt: skip
        elif kind == "annotation_removed":
            room.overlay.remove(message["ids"])
        else:
            log.warning("annotation bus: unknown message type %r", kind)
            return
        for change in told:
            for listener in self.listeners:
                try:
                    await listener(change)
                except Exception:  # one listener must not starve the others
                    log.exception("annotation listener failed")
