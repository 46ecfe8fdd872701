"""The SFU's vocabulary: the configuration, a published track, a subscription, one
participant's media session, and what the router's legs need of the router.

Two peer connections per participant, as LiveKit does: a *publisher* connection the client
offers (its tracks come in, `media.publisher`), and a *subscriber* connection the server
offers (every track the participant may receive goes out, `media.subscriber`). Each published
track has one `TrackForwarder`; each subscription is one `SubscriberTrack` on the subscriber
connection. Nothing here decodes or encodes, and nothing here knows Socket.IO.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from orbridge.media.forwarder import TrackForwarder
from orbridge.media.ice import filter_remote_candidates
from orbridge.media.keyframes import KeyframeRequester
from orbridge.rooms.errors import DomainError
from orbridge.rooms.roles import Grant
from orbridge.rooms.tasks import Tasks


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
    # A published track that brings no frame this long (seconds) while its publisher's
    # connection is up is `track_stalled` (media/stall.py).
    track_stall_timeout: float = 1.5


@dataclass(frozen=True)
class Stall:
    """Why a track is stalled: what `track_stalled` said (media/stall.py)."""

    since: float  # monotonic time of the last frame (or of the publish, if none came)
    last_frame_ms: int | None  # its wall-clock time (ms); None when no frame ever came
    stalled_ms: int  # when the stall was declared (wall clock, ms)


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
    stall: Stall | None = None  # set while stalled (media/stall.py)
    # The latest stall event being sent: the next one waits for it (they stay in order).
    stall_event: asyncio.Task[None] | None = None

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


class RouterContext(Protocol):
    """What the publisher and subscriber legs use of the router (media.router.MediaRouter)."""

    config: MediaConfig
    signals: MediaSignals
    sessions: dict[str, MediaSession]
    tasks: Tasks
    track_started: list[Callable[[PublishedTrack], None]]

    def tracks(self, room: str) -> list[PublishedTrack]: ...

    def register_track(self, track: PublishedTrack) -> None: ...

    async def end_track(self, track: PublishedTrack, reason: str) -> None: ...

    def _new_pc(self) -> RTCPeerConnection: ...

    def _new_publisher_pc(self) -> RTCPeerConnection: ...

    def _create_forwarder(
        self, remote: MediaStreamTrack, keyframes: KeyframeRequester | None, codec: str, name: str
    ) -> TrackForwarder: ...

    def _add_sender(
        self, pc: RTCPeerConnection, track: PublishedTrack, name: str
    ) -> tuple[RTCRtpTransceiver, MediaStreamTrack]: ...


def description(sdp: str, kind: str) -> RTCSessionDescription:
    """A remote offer or answer, checked for shape, with candidates this node must not probe
    dropped (`media.ice.filter_remote_candidates`)."""
    if "m=" not in sdp or not sdp.startswith("v=0"):
        raise DomainError("invalid_sdp", f"the {kind} is not an SDP session description")
    sdp, _ = filter_remote_candidates(sdp)
    return RTCSessionDescription(sdp=sdp, type=kind)
