"""The media part of the protocol: publish, unpublish, subscribe, subscriber_answer.

Binds the SFU router (media/router.py) to the Socket.IO namespace: its events, the
room's life cycle (join, leave, shutdown) and the snapshot's `tracks`.
"""

from __future__ import annotations

from typing import Any

from orbridge.media.router import MediaRouter, PublishedTrack
from orbridge.rooms.errors import DomainError
from orbridge.rooms.participant import Participant
from orbridge.rooms.roles import Grant
from orbridge.signaling.sio import schemas
from orbridge.signaling.sio.gate import EventSpec
from orbridge.signaling.sio.namespace import RoomNamespace, sio_room


class SocketSignals:
    """`MediaSignals` over Socket.IO."""

    def __init__(self, namespace: RoomNamespace) -> None:
        self.namespace = namespace

    async def send(self, sid: str, event: str, data: dict[str, Any]) -> None:
        await self.namespace.emit(event, data, to=sid)

    async def broadcast(self, room: str, event: str, data: dict[str, Any]) -> None:
        await self.namespace.emit(event, data, room=sio_room(room))


def _may_publish(claims_grants: frozenset[Grant]) -> bool:
    return bool({Grant.PUBLISH_VIDEO, Grant.PUBLISH_AUDIO} & claims_grants)


class MediaEvents:
    def __init__(self, namespace: RoomNamespace, router: MediaRouter) -> None:
        self.namespace = namespace
        self.router = router
        sdp_limit = schemas.MAX_SDP + 4096  # the SDP plus the track list
        namespace.register(
            EventSpec("publish", schemas.Publish, self.on_publish, max_bytes=sdp_limit)
        )
        namespace.register(EventSpec("unpublish", schemas.Unpublish, self.on_unpublish))
        namespace.register(EventSpec("subscribe", schemas.Empty, self.on_subscribe))
        namespace.register(
            EventSpec(
                "subscriber_answer",
                schemas.SubscriberAnswer,
                self.on_subscriber_answer,
                max_bytes=sdp_limit,
            )
        )
        namespace.join_hooks.append(self._joined)
        namespace.leave_hooks.append(self._left)
        namespace.snapshot_parts.append(self._snapshot)
        namespace.shutdown_hooks.append(router.close_all)
        router.track_stalled.append(self._count_stall)

    async def _joined(self, participant: Participant) -> None:
        self.router.open(
            participant.sid, participant.room, participant.identity, participant.grants
        )

    async def _left(self, participant: Participant, reason: str) -> None:
        await self.router.close(participant.sid, reason)

    def _snapshot(self, me: Participant) -> dict[str, Any]:
        # with `stalled` and `last_frame_ms`: a late joiner sees a frozen track as frozen
        tracks = self.router.tracks(me.room)
        return {"tracks": [dict(t.public(), **self.router.liveness(t)) for t in tracks]}

    def _count_stall(self, track: PublishedTrack) -> None:
        self.namespace.metrics.track_stalls.labels(track.kind).inc()

    async def on_publish(self, sid: str, message: schemas.Publish) -> dict[str, Any]:
        # Per-kind grants are checked against the offer itself (router._check_offer);
        # this early refusal spares a peer connection for those who may publish nothing.
        claims = self.namespace.claims[sid]
        if not _may_publish(claims.grants):
            raise DomainError("forbidden", f"a {claims.role.value} may not publish media")
        sources = {t.mid: t.source for t in message.tracks}
        answer, tracks = await self.router.publish(sid, message.sdp, sources)
        return {"sdp": answer, "tracks": [dict(t.public(), mid=t.mid) for t in tracks]}

    async def on_unpublish(self, sid: str, message: schemas.Unpublish) -> dict[str, Any]:
        return {"ended": await self.router.unpublish(sid, message.track_ids)}

    async def on_subscribe(self, sid: str, message: schemas.Empty) -> dict[str, Any]:
        tracks = await self.router.subscribe(sid)
        return {"tracks": [t.public() for t in tracks]}

    async def on_subscriber_answer(self, sid: str, message: schemas.SubscriberAnswer) -> None:
        await self.router.subscriber_answer(sid, message.sdp)
