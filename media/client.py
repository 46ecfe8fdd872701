"""The media side of a Python client: publish tracks and receive the room's tracks over the
same protocol as the browser (docs/protocol.md: publish, subscribe, subscriber_offer).

It is handed a `SignalingPort` (the CLI's `RoomClient` is one) instead of importing a protocol
client, so media stays below the server's face.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidStateError
from aiortc.mediastreams import MediaStreamTrack

from orbridge.media.codecs import prefer_codec
from orbridge.media.ice import rtc_configuration
from orbridge.rooms.tasks import Tasks

log = logging.getLogger("orbridge.client")


class SignalingPort(Protocol):
    """What the media client needs of a signalling connection."""

    async def request(self, event: str, payload: Any = None) -> Any:
        """Send an event and return the ack's data (raise on an error ack)."""
        ...

    def on(self, name: str, handler: Callable[[Any], Awaitable[None]]) -> None:
        """Handle the server's `name` events with `handler`."""
        ...


OnTrack = Callable[[dict[str, Any], MediaStreamTrack], Awaitable[None] | None]


@dataclass
class Outgoing:
    track: MediaStreamTrack
    source: str


class MediaClient:
    def __init__(
        self,
        room: SignalingPort,
        video_codec: str = "VP8",
        on_pc: Callable[[RTCPeerConnection], None] | None = None,
        before_answer: Callable[[RTCPeerConnection], None] | None = None,
    ) -> None:
        self.room = room
        self.video_codec = video_codec
        self.on_pc = on_pc  # lets a caller mark a connection (e.g. tap mode) before it connects
        # called on the subscriber connection once the offer is applied, before answering
        # (its transports exist then and nothing has connected yet)
        self.before_answer = before_answer
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self.published: list[dict[str, Any]] = []
        self.tracks: dict[str, dict[str, Any]] = {}  # mid -> track info of the last offer
        self._on_track: OnTrack | None = None
        self.offers_answered = 0
        self.closed = False
        self._tasks = Tasks("media client", log)

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(rtc_configuration())
        if self.on_pc is not None:
            self.on_pc(pc)
        return pc

    async def publish(self, outgoing: Sequence[Outgoing]) -> list[dict[str, Any]]:
        """Send these tracks (one offer); returns the server's track descriptions."""
        pc = self.publisher = self.publisher or self._new_pc()
        new = []
        for item in outgoing:
            transceiver = pc.addTransceiver(item.track, direction="sendonly")
            prefer_codec(transceiver, self.video_codec if item.track.kind == "video" else "opus")
            new.append((transceiver, item.source))
        await pc.setLocalDescription(await pc.createOffer())
        sources = [{"mid": t.mid, "source": source} for t, source in new]
        answer = await self.room.request(
            "publish", {"sdp": pc.localDescription.sdp, "tracks": sources}
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        self.published += answer["tracks"]
        return list(answer["tracks"])

    async def unpublish(self) -> list[str]:
        ended = await self.room.request("unpublish", {})
        if self.publisher is not None:
            await self.publisher.close()
            self.publisher = None
        return list(ended["ended"])

    async def subscribe(self, on_track: OnTrack) -> list[dict[str, Any]]:
        """Receive every track this participant may see; `on_track(info, track)` for each."""
        self._on_track = on_track
        self.room.on("subscriber_offer", self._on_offer)
        answer = await self.room.request("subscribe")
        return list(answer["tracks"])

    async def _on_offer(self, data: dict[str, Any]) -> None:
        if self.closed:  # an offer the server sent while this client was leaving
            return
        pc = self.subscriber
        if pc is None:
            pc = self.subscriber = self._new_pc()
            pc.on("track", self._track_arrived)
        self.tracks = {t["mid"]: t["track"] for t in data["tracks"]}
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="offer"))
            if self.before_answer is not None:
                self.before_answer(pc)
            await pc.setLocalDescription(await pc.createAnswer())
        except InvalidStateError:
            if self.closed or pc.signalingState == "closed":
                return  # closed by `close()` while this offer was being applied
            raise
        await self.room.request("subscriber_answer", {"sdp": pc.localDescription.sdp})
        self.offers_answered += 1

    def _track_arrived(self, track: MediaStreamTrack) -> None:
        pc = self.subscriber
        assert pc is not None
        mid = next((t.mid for t in pc.getTransceivers() if t.receiver.track is track), None)
        info = self.tracks.get(mid or "", {"mid": mid})
        if self._on_track is not None:
            result = self._on_track(info, track)
            if asyncio.iscoroutine(result):
                self._tasks.spawn(result, name=f"on_track:{mid}")

    async def close(self) -> None:
        self.closed = True
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                await pc.close()
        self.publisher = self.subscriber = None
