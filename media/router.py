"""The SFU router: who publishes which track, and who receives it.

The router keeps this node's media sessions (by room, so fan-out is O(room)) and published
tracks, and hands the negotiations to its two legs: `PublisherLeg` (offers in, forwarders
out) and `SubscriberLeg` (the server's offers to receivers). A track's start and end are
told to the sinks beyond subscribers (the recorder) through `track_started`/`track_ended`.
A track whose media stops while its publisher stays connected is told `track_stalled`, then
`track_resumed` (`StallWatch`, media/stall.py: one periodic check per node).
Nothing here decodes or encodes; nothing here knows Socket.IO (`MediaSignals`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamTrack

from orbridge.media.forwarder import TrackForwarder
from orbridge.media.ice import rtc_configuration
from orbridge.media.keyframes import KeyframeRequester
from orbridge.media.publisher import PublisherLeg
from orbridge.media.session import (
    MediaConfig,
    MediaSession,
    MediaSignals,
    PublishedTrack,
    Subscription,
)
from orbridge.media.stall import StallWatch
from orbridge.media.subscriber import SubscriberLeg
from orbridge.media.subscriber_track import add_subscriber_track
from orbridge.rooms.errors import DomainError
from orbridge.rooms.roles import Grant
from orbridge.rooms.tasks import Tasks

log = logging.getLogger("orbridge.media")

__all__ = ["MediaConfig", "MediaRouter", "MediaSession", "PublishedTrack", "Subscription"]


class MediaRouter:
    def __init__(self, config: MediaConfig, signals: MediaSignals) -> None:
        self.config = config
        self.signals = signals
        self.sessions: dict[str, MediaSession] = {}
        self.by_room: dict[str, dict[str, MediaSession]] = {}  # room -> sid -> session
        self.rooms: dict[str, dict[str, PublishedTrack]] = {}  # room -> track id -> track
        self.tasks = Tasks("media", log)
        self.publishing = PublisherLeg(self)
        self.subscribing = SubscriberLeg(self)
        # Sinks beyond subscribers (the recorder): told when a track starts and after it ended.
        self.track_started: list[Callable[[PublishedTrack], None]] = []
        self.track_ended: list[Callable[[PublishedTrack, str], Awaitable[None]]] = []
        # Told when a track is declared stalled (the metrics count them).
        self.track_stalled: list[Callable[[PublishedTrack], None]] = []
        self.stalls = StallWatch(
            config.track_stall_timeout,
            tracks=self.all_tracks,
            is_up=self._publisher_up,
            emit=self._stall_event,
        )
        self._stall_task: asyncio.Task[None] | None = None

    # sessions ---------------------------------------------------------------------
    def open(self, sid: str, room: str, identity: str, grants: frozenset[Grant]) -> MediaSession:
        session = MediaSession(sid, room, identity, grants)
        self.sessions[sid] = session
        self.by_room.setdefault(room, {})[sid] = session
        return session

    def tracks(self, room: str) -> list[PublishedTrack]:
        return list(self.rooms.get(room, {}).values())

    def all_tracks(self) -> list[PublishedTrack]:
        return [t for room in self.rooms.values() for t in room.values()]

    def room_sessions(self, room: str) -> list[MediaSession]:
        return list(self.by_room.get(room, {}).values())

    async def close(self, sid: str, reason: str = "left") -> None:
        """The participant left: end its tracks, close its connections."""
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        members = self.by_room.get(session.room, {})
        members.pop(sid, None)
        if not members:
            self.by_room.pop(session.room, None)
        for track in list(session.published.values()):
            await self.end_track(track, reason)
        if session.answer_timer is not None:
            session.answer_timer.cancel()
        for sub in session.subscriptions.values():
            sub.sender_track.stop()
        for pc in (session.publisher, session.subscriber):
            if pc is not None:
                await pc.close()

    async def close_all(self) -> None:
        if self._stall_task is not None:
            self._stall_task.cancel()
        for sid in list(self.sessions):
            await self.close(sid, "server_shutdown")
        await self.tasks.wait()

    def _session(self, sid: str) -> MediaSession:
        session = self.sessions.get(sid)
        if session is None:
            raise DomainError("not_joined", "join the room first")
        return session

    # what the legs are built from (the SFU benchmark's baseline overrides these) ------------
    def _new_pc(self) -> RTCPeerConnection:
        cfg = self.config
        return RTCPeerConnection(
            rtc_configuration(cfg.stun_urls, cfg.turn_urls, cfg.turn_username, cfg.turn_credential)
        )

    def _new_publisher_pc(self) -> RTCPeerConnection:
        return self._new_pc()

    def _create_forwarder(
        self, remote: MediaStreamTrack, keyframes: KeyframeRequester | None, codec: str, name: str
    ) -> TrackForwarder:
        return TrackForwarder(
            remote, keyframes=keyframes, queue_size=self.config.queue_size, codec=codec, name=name
        )

    def _add_sender(
        self, pc: RTCPeerConnection, track: PublishedTrack, name: str
    ) -> tuple[RTCRtpTransceiver, MediaStreamTrack]:
        codec = self.config.video_codec if track.kind == "video" else "opus"
        return add_subscriber_track(
            pc,
            track.forwarder,
            codec=codec,
            maxsize=self.config.queue_size,
            name=name,
            fast=self.config.lean_sender,
        )

    # publishing -------------------------------------------------------------------
    async def publish(
        self, sid: str, sdp: str, sources: dict[str, str]
    ) -> tuple[str, list[PublishedTrack]]:
        """Answer a publisher's offer; the room hears of its new tracks and receivers get
        them offered afterwards, so the answer never waits for a subscriber's negotiation."""
        answer, new = await self.publishing.publish(self._session(sid), sdp, sources)
        for track in new:
            self.tasks.spawn(self._announce(track), name=f"announce:{track.id}")
        return answer, new

    async def _announce(self, track: PublishedTrack) -> None:
        await self.signals.broadcast(track.room, "track_published", {"track": track.public()})
        self.fan_out(track)

    def fan_out(self, track: PublishedTrack) -> None:
        """Offer `track` to every session of its room that may receive it (each on its own)."""
        for session in self.room_sessions(track.room):
            if self.subscribing.may_receive(session, track) and self.subscribing.add(
                session, track
            ):
                self.subscribing.negotiate_soon(session)

    def register_track(self, track: PublishedTrack) -> None:
        self.rooms.setdefault(track.room, {})[track.id] = track
        self.stalls.watch(track)
        if self._stall_task is None or self._stall_task.done():  # it ends with the last track
            self._stall_task = self.tasks.spawn(self.stalls.run(), name="stall watch")

    # stalls -----------------------------------------------------------------------
    def liveness(self, track: PublishedTrack) -> dict[str, Any]:
        """`stalled` and `last_frame_ms` of a track (the snapshot's track objects)."""
        return self.stalls.state(track)

    def _publisher_up(self, track: PublishedTrack) -> bool:
        session = self.sessions.get(track.owner_sid)
        pc = session.publisher if session is not None else None
        return pc is not None and pc.connectionState == "connected"

    def _stall_event(self, track: PublishedTrack, event: str, data: dict[str, Any]) -> None:
        """Tell the room, never awaited by the watch; a track's events go out in order."""
        if event == "track_stalled":
            for hook in self.track_stalled:
                try:
                    hook(track)
                except Exception:
                    log.exception("track_stalled hook failed for %s", track.id)
        previous = track.stall_event
        track.stall_event = self.tasks.spawn(
            self._send_stall_event(previous, track.room, event, data), name=f"{event}:{track.id}"
        )

    async def _send_stall_event(
        self, previous: asyncio.Task[None] | None, room: str, event: str, data: dict[str, Any]
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # its failure is logged by self.tasks
        await self.signals.broadcast(room, event, data)

    async def unpublish(self, sid: str, track_ids: Iterable[str] | None) -> list[str]:
        wanted = None if track_ids is None else list(track_ids)
        return await self.publishing.unpublish(self._session(sid), wanted)

    async def end_track(self, track: PublishedTrack, reason: str) -> None:
        room_tracks = self.rooms.get(track.room, {})
        if room_tracks.pop(track.id, None) is None:
            return  # already ended
        if not room_tracks:
            self.rooms.pop(track.room, None)
        owner = self.sessions.get(track.owner_sid)
        if owner is not None:
            owner.published.pop(track.mid, None)
        await track.forwarder.stop()
        if track.keyframes is not None:
            track.keyframes.close()
        log.info("track %s (%s of %s) ended: %s", track.id, track.source, track.owner, reason)
        for ended in self.track_ended:
            try:
                await ended(track, reason)
            except Exception:
                log.exception("track_ended hook failed for %s", track.id)
        await self.signals.broadcast(
            track.room, "track_ended", {"track": track.public(), "reason": reason}
        )
        for session in self.room_sessions(track.room):
            if self.subscribing.drop(session, track):
                self.subscribing.negotiate_soon(session)

    # subscribing ------------------------------------------------------------------
    async def subscribe(self, sid: str) -> list[PublishedTrack]:
        return self.subscribing.subscribe(self._session(sid))

    async def subscriber_answer(self, sid: str, sdp: str) -> None:
        await self.subscribing.answer(self._session(sid), sdp)

    # frames and counters --------------------------------------------------------------
    def source_timestamp(self, sid: str, track_id: str, rtp_timestamp: int) -> int | None:
        """Map an RTP timestamp that participant `sid` received on `track_id` to the source
        frame's timestamp (the one the recording keeps); None when it can't be known."""
        session = self.sessions.get(sid)
        subscription = session.subscriptions.get(track_id) if session else None
        if subscription is None:
            return None
        mapper: Any = getattr(subscription.sender_track, "source_timestamp", None)
        if mapper is None:  # not a forwarding subscription (the benchmark's relay)
            return None
        result: int | None = mapper(rtp_timestamp, subscription.track.forwarder.last_ts)
        return result

    def stats(self) -> dict[str, int]:
        """Counts, plus live forwarders' and subscribers' counters summed."""
        tracks = self.all_tracks()
        subscribers = [s for t in tracks for s in t.forwarder.subscribers]
        return {
            "sessions": len(self.sessions),
            "tracks": len(tracks),
            "stalled": sum(1 for t in tracks if t.stall is not None),
            "subscriptions": sum(len(s.subscriptions) for s in self.sessions.values()),
            "frames_in": sum(t.forwarder.stats.frames_in for t in tracks),
            "frames_dropped": sum(s.stats.frames_dropped for s in subscribers),
            "lag_events": sum(s.stats.lag_events for s in subscribers),
            "keyframe_requests_sent": sum(t.forwarder.stats.keyframe_requests_sent for t in tracks),
        }
