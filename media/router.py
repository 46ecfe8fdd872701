"""The SFU's room logic: who publishes which track, who receives it, and the negotiations.

Two peer connections per participant, as LiveKit does: a *publisher* connection the client
offers (its tracks come in), and a *subscriber* connection the server offers (every track the
participant may receive goes out). Each published track has one `TrackForwarder`; each
subscription is one `SubscriberTrack` on the subscriber connection. Nothing here decodes or
encodes; nothing here knows Socket.IO (events go out through `MediaSignals`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from orbridge.media import lean_sender
from orbridge.media.codecs import negotiated_codec, restrict_answer_codec
from orbridge.media.forwarder import TrackForwarder
from orbridge.media.ice import filter_remote_candidates, rtc_configuration
from orbridge.media.keyframes import KeyframeRequester
from orbridge.media.subscriber_track import add_subscriber_track
from orbridge.rooms.errors import DomainError
from orbridge.rooms.roles import Grant

log = logging.getLogger("orbridge.media")

_PUBLISH_GRANT = {"video": Grant.PUBLISH_VIDEO, "audio": Grant.PUBLISH_AUDIO}
_SUBSCRIBE_GRANT = {"video": Grant.SUBSCRIBE_VIDEO, "audio": Grant.SUBSCRIBE_AUDIO}
# aiortc stores the offer direction reversed (as seen from here): remote "sendonly" -> "recvonly".
_REMOTE_SENDS = ("recvonly", "sendrecv")


class MediaSignals(Protocol):
    """How the router talks to clients (implemented by the signaling layer)."""

    async def send(self, sid: str, event: str, data: dict[str, Any]) -> None: ...

    async def broadcast(self, room: str, event: str, data: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class MediaConfig:
    video_codec: str = "VP8"  # VP8 or H264: both legs of every video track use it
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_username: str | None = None
    turn_credential: str | None = None
    queue_size: int = 30  # frames per subscriber queue (about 1 s of video)
    answer_timeout: float = 15.0  # seconds a client has to answer a subscriber offer
    lean_sender: bool = True  # media/lean_sender.py; False: aiortc's own send loop
    # At most one keyframe request (PLI) upstream per track per this many seconds: keyframes
    # are large, and a county OR's uplink is small.
    keyframe_interval: float = 0.5


@dataclass(eq=False)
class PublishedTrack:
    id: str
    room: str
    owner: str  # identity
    owner_sid: str
    source: str
    kind: str
    codec: str
    mid: str
    forwarder: TrackForwarder
    keyframes: KeyframeRequester | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "participant": self.owner,
            "source": self.source,
            "kind": self.kind,
            "codec": self.codec,
        }


@dataclass(eq=False)
class Subscription:
    track: PublishedTrack
    transceiver: RTCRtpTransceiver
    sender_track: MediaStreamTrack  # a SubscriberTrack (the benchmark's baseline uses others)


@dataclass(eq=False)
class MediaSession:
    """One participant's media on this node."""

    sid: str
    room: str
    identity: str
    grants: frozenset[Grant]
    publisher: RTCPeerConnection | None = None
    subscriber: RTCPeerConnection | None = None
    published: dict[str, PublishedTrack] = field(default_factory=dict)  # by mid
    subscriptions: dict[str, Subscription] = field(default_factory=dict)  # by track id
    wants_media: bool = False  # the client asked to receive (`subscribe`)
    awaiting_answer: bool = False
    renegotiate: bool = False
    # One lock per connection: publishing and subscribing never wait on each other.
    publish_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subscribe_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    answer_timer: asyncio.TimerHandle | None = None


def _description(sdp: str, kind: str) -> RTCSessionDescription:
    if "m=" not in sdp or not sdp.startswith("v=0"):
        raise DomainError("invalid_sdp", f"the {kind} is not an SDP session description")
    sdp, _ = filter_remote_candidates(sdp)
    return RTCSessionDescription(sdp=sdp, type=kind)


class MediaRouter:
    def __init__(self, config: MediaConfig, signals: MediaSignals) -> None:
        self.config = config
        self.signals = signals
        self.sessions: dict[str, MediaSession] = {}
        self.rooms: dict[str, dict[str, PublishedTrack]] = {}  # room -> track id -> track
        self._tasks: set[asyncio.Task[Any]] = set()
        # Sinks beyond subscribers (the recorder): told when a track starts and after it ended.
        self.track_started: list[Callable[[PublishedTrack], None]] = []
        self.track_ended: list[Callable[[PublishedTrack, str], Awaitable[None]]] = []

    # sessions ---------------------------------------------------------------------
    def open(self, sid: str, room: str, identity: str, grants: frozenset[Grant]) -> MediaSession:
        session = MediaSession(sid, room, identity, grants)
        self.sessions[sid] = session
        return session

    def tracks(self, room: str) -> list[PublishedTrack]:
        return list(self.rooms.get(room, {}).values())

    async def close(self, sid: str, reason: str = "left") -> None:
        """The participant left: end its tracks, close its connections."""
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        for track in list(session.published.values()):
            await self._end_track(track, reason)
        if session.answer_timer is not None:
            session.answer_timer.cancel()
        for sub in session.subscriptions.values():
            sub.sender_track.stop()
        for pc in (session.publisher, session.subscriber):
            if pc is not None:
                await pc.close()

    async def close_all(self) -> None:
        for sid in list(self.sessions):
            await self.close(sid, "server_shutdown")

    def _session(self, sid: str) -> MediaSession:
        session = self.sessions.get(sid)
        if session is None:
            raise DomainError("not_joined", "join the room first")
        return session

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
        """Answer a publisher's offer (first or renegotiation). `sources` maps mid -> source."""
        session = self._session(sid)
        offer = _description(sdp, "offer")
        async with session.publish_lock:
            pc = session.publisher
            fresh = pc is None
            if pc is None:
                pc = session.publisher = self._new_publisher_pc()
                pc.on("connectionstatechange", lambda: self._watch_publisher(session))
            try:
                await pc.setRemoteDescription(offer)
            except Exception as exc:
                if fresh:
                    session.publisher = None
                    await pc.close()
                raise DomainError("invalid_sdp", f"cannot use this offer: {exc}") from exc
            sending = [
                t for t in pc.getTransceivers()
                if t.mid is not None and not t.stopped and t._offerDirection in _REMOTE_SENDS
            ]  # fmt: skip
            try:
                self._check_offer(session, sending, sources)
            except DomainError:
                if fresh:
                    session.publisher = None
                    await pc.close()
                raise
            try:
                for transceiver in sending:
                    transceiver.direction = "recvonly"
                    if transceiver.mid not in session.published:
                        restrict_answer_codec(
                            transceiver,
                            self.config.video_codec if transceiver.kind == "video" else "opus",
                        )
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:
                if fresh:
                    session.publisher = None
                    await pc.close()
                raise DomainError(
                    "codec_unsupported",
                    f"cannot answer: offer {self.config.video_codec} video and Opus audio ({exc})",
                ) from exc
            new = []
            sending_mids = {t.mid for t in sending}
            for mid, track in list(session.published.items()):
                if mid not in sending_mids:  # the client stopped sending it
                    await self._end_track(track, "unpublished")
            for transceiver in sending:
                assert transceiver.mid is not None
                if transceiver.mid in session.published:
                    continue
                remote = transceiver.receiver.track
                new.append(self._start_track(session, pc, transceiver, remote, sources))
            answer = pc.localDescription.sdp
        for track in new:
            await self.signals.broadcast(track.room, "track_published", {"track": track.public()})
            await self._fan_out(track)
        return answer, new

    def _check_offer(
        self, session: MediaSession, sending: list[RTCRtpTransceiver], sources: dict[str, str]
    ) -> None:
        if not sending:
            raise DomainError("invalid_sdp", "the offer sends no audio or video")
        for transceiver in sending:
            grant = _PUBLISH_GRANT.get(transceiver.kind)
            if grant is None or grant not in session.grants:
                raise DomainError("forbidden", f"you may not publish {transceiver.kind}")
            if transceiver.mid not in session.published and transceiver.mid not in sources:
                raise DomainError(
                    "invalid_payload", f"tracks: no source given for mid {transceiver.mid}"
                )

    def _start_track(
        self,
        session: MediaSession,
        pc: RTCPeerConnection,
        transceiver: RTCRtpTransceiver,
        remote: MediaStreamTrack,
        sources: dict[str, str],
    ) -> PublishedTrack:
        assert transceiver.mid is not None
        kind = transceiver.kind
        keyframes = (
            KeyframeRequester.for_transceiver(
                pc, transceiver, min_interval=self.config.keyframe_interval
            )
            if kind == "video"
            else None
        )
        codec = negotiated_codec(transceiver) or ""
        track_id = f"TR_{uuid.uuid4().hex[:12]}"
        forwarder = self._create_forwarder(
            remote,
            keyframes,
            codec,
            f"{session.room}/{session.identity}/{sources[transceiver.mid]}",
        )
        track = PublishedTrack(
            id=track_id,
            room=session.room,
            owner=session.identity,
            owner_sid=session.sid,
            source=sources[transceiver.mid],
            kind=kind,
            codec=codec,
            mid=transceiver.mid,
            forwarder=forwarder,
            keyframes=keyframes,
        )
        session.published[transceiver.mid] = track
        self.rooms.setdefault(session.room, {})[track_id] = track
        forwarder.on_ended(lambda: self._spawn(self._end_track(track, "ended")))
        forwarder.start()
        for started in self.track_started:
            try:
                started(track)
            except Exception:  # a failing sink must not fail the publisher
                log.exception("track_started hook failed for %s", track.id)
        log.info("%s publishes %s %s (%s) in %s", session.identity, track.source, kind, codec,
                 session.room)  # fmt: skip
        return track

    async def unpublish(self, sid: str, track_ids: Iterable[str] | None) -> list[str]:
        session = self._session(sid)
        mine = {t.id: t for t in session.published.values()}
        wanted = list(mine) if track_ids is None else list(track_ids)
        unknown = [t for t in wanted if t not in mine]
        if unknown:
            raise DomainError("not_found", f"you publish no track {unknown[0]}")
        for track_id in wanted:
            await self._end_track(mine[track_id], "unpublished")
        if track_ids is None and session.publisher is not None:
            pc, session.publisher = session.publisher, None
            await pc.close()
        return wanted

    def _watch_publisher(self, session: MediaSession) -> None:
        pc = session.publisher
        if pc is not None and pc.connectionState in ("failed", "closed"):
            for track in list(session.published.values()):
                self._spawn(self._end_track(track, "connection_lost"))

    async def _end_track(self, track: PublishedTrack, reason: str) -> None:
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
        for session in list(self.sessions.values()):
            sub = session.subscriptions.pop(track.id, None)
            if sub is None:
                continue
            sub.sender_track.stop()
            sub.transceiver.direction = "inactive"
            await self._negotiate(session)

    # subscribing ------------------------------------------------------------------
    async def subscribe(self, sid: str) -> list[PublishedTrack]:
        """The client is ready to receive: offer it every track it may see, now and later."""
        session = self._session(sid)
        session.wants_media = True
        tracks = [t for t in self.tracks(session.room) if self._may_receive(session, t)]
        added = [self._add_subscription(session, t) for t in tracks]
        if any(added):
            self._spawn(self._negotiate(session))
        return tracks

    def _may_receive(self, session: MediaSession, track: PublishedTrack) -> bool:
        grant = _SUBSCRIBE_GRANT.get(track.kind)
        return (
            session.wants_media
            and track.owner_sid != session.sid
            and grant is not None
            and grant in session.grants
        )

    def _add_subscription(self, session: MediaSession, track: PublishedTrack) -> bool:
        if track.id in session.subscriptions or track.forwarder.ended:
            return False
        if session.subscriber is None:
            session.subscriber = self._new_pc()
        transceiver, sender_track = self._add_sender(
            session.subscriber, track, f"{session.identity}<-{track.id}"
        )
        session.subscriptions[track.id] = Subscription(track, transceiver, sender_track)
        return True

    async def _fan_out(self, track: PublishedTrack) -> None:
        for session in list(self.sessions.values()):
            if (
                session.room == track.room
                and self._may_receive(session, track)
                and self._add_subscription(session, track)
            ):
                await self._negotiate(session)

    async def _negotiate(self, session: MediaSession) -> None:
        """Send the subscriber connection's next offer (one outstanding at a time)."""
        async with session.subscribe_lock:
            pc = session.subscriber
            if pc is None or session.sid not in self.sessions:
                return
            if session.awaiting_answer:
                session.renegotiate = True
                return
            session.renegotiate = False
            await pc.setLocalDescription(await pc.createOffer())
            session.awaiting_answer = True
            mids = [
                {"mid": sub.transceiver.mid, "track": sub.track.public()}
                for sub in session.subscriptions.values()
            ]
            sdp = pc.localDescription.sdp
            session.answer_timer = asyncio.get_running_loop().call_later(
                self.config.answer_timeout, self._answer_overdue, session
            )
        await self.signals.send(session.sid, "subscriber_offer", {"sdp": sdp, "tracks": mids})

    def _answer_overdue(self, session: MediaSession) -> None:
        log.warning("%s did not answer its subscriber offer; offering again", session.identity)
        session.awaiting_answer = False
        pc = session.subscriber
        if pc is not None and pc.signalingState == "have-local-offer":
            # Roll back is not supported by aiortc: start over with a fresh connection.
            session.subscriber = None
            old = list(session.subscriptions.values())
            session.subscriptions.clear()
            for sub in old:
                sub.sender_track.stop()
            self._spawn(pc.close())
            for sub in old:
                self._add_subscription(session, sub.track)
        self._spawn(self._negotiate(session))

    async def subscriber_answer(self, sid: str, sdp: str) -> None:
        session = self._session(sid)
        pc = session.subscriber
        if pc is None or not session.awaiting_answer:
            raise DomainError("unexpected_answer", "there is no subscriber offer to answer")
        answer = _description(sdp, "answer")
        async with session.subscribe_lock:
            try:
                await pc.setRemoteDescription(answer)
            except Exception as exc:
                raise DomainError("invalid_sdp", f"cannot use this answer: {exc}") from exc
            session.awaiting_answer = False
            if session.answer_timer is not None:
                session.answer_timer.cancel()
                session.answer_timer = None
        if session.renegotiate:
            await self._negotiate(session)

    # plumbing -----------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("media task failed: %s", task.exception(), exc_info=task.exception())

    def source_timestamp(self, sid: str, track_id: str, rtp_timestamp: int) -> int | None:
        """Map an RTP timestamp that participant `sid` received on `track_id` to the source
        frame's timestamp (the one the recording keeps); None when it can't be known."""
        session = self.sessions.get(sid)
        subscription = session.subscriptions.get(track_id) if session else None
        if subscription is None:
            return None
        near = subscription.track.forwarder.last_ts
        return lean_sender.source_timestamp(subscription.transceiver.sender, rtp_timestamp, near)

    def stats(self) -> dict[str, int]:
        """Counts, plus live forwarders' and subscribers' counters summed."""
        tracks = [t for room in self.rooms.values() for t in room.values()]
        subscribers = [s for t in tracks for s in t.forwarder.subscribers]
        return {
            "sessions": len(self.sessions),
            "tracks": len(tracks),
            "subscriptions": sum(len(s.subscriptions) for s in self.sessions.values()),
            "frames_in": sum(t.forwarder.stats.frames_in for t in tracks),
            "frames_dropped": sum(s.stats.frames_dropped for s in subscribers),
            "lag_events": sum(s.stats.lag_events for s in subscribers),
            "keyframe_requests_sent": sum(t.forwarder.stats.keyframe_requests_sent for t in tracks),
        }
