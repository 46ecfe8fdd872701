"""The SFU benchmark's baseline: what an aiortc server does without orbridge's forwarding.

aiortc's own recipe for one-to-many is `MediaRelay`: the publisher's track is decoded, the relay
hands the decoded frames to every subscriber, and every subscriber's sender encodes them again
(one encoder per subscriber). `RelayRouter` is orbridge's router with exactly that swapped in,
so both run behind the same signaling, with the same clients, in one benchmark run.
"""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from orbridge.media import tap
from orbridge.media.codecs import prefer_codec
from orbridge.media.forwarder import TrackForwarder
from orbridge.media.keyframes import KeyframeRequester
from orbridge.media.router import MediaRouter, PublishedTrack


class RelaySource(TrackForwarder):
    """Keeps the router's bookkeeping, but the track is read by a MediaRelay, not by us."""

    def __init__(self, track: MediaStreamTrack, name: str) -> None:
        super().__init__(track, name=name)
        self.relay = MediaRelay()

    def start(self) -> None:  # MediaRelay's proxies read the track; a second reader would split it
        pass


class RelayRouter(MediaRouter):
    def _new_publisher_pc(self) -> RTCPeerConnection:
        pc = self._new_pc()
        tap.set_receive_mode(pc, "decode")  # the relay needs decoded frames
        return pc

    def _create_forwarder(
        self, remote: MediaStreamTrack, keyframes: KeyframeRequester | None, codec: str, name: str
    ) -> TrackForwarder:
        return RelaySource(remote, name)

    def _add_sender(
        self, pc: RTCPeerConnection, track: PublishedTrack, name: str
    ) -> tuple[RTCRtpTransceiver, MediaStreamTrack]:
        source = track.forwarder
        assert isinstance(source, RelaySource)
        relayed = source.relay.subscribe(source.track, buffered=False)
        transceiver = pc.addTransceiver(relayed, direction="sendonly")
        prefer_codec(transceiver, self.config.video_codec if track.kind == "video" else "opus")
        return transceiver, relayed
