"""The outbound track a subscriber's RTCRtpSender reads: packets in, packets out.

aiortc's sender packs anything that is not an ``av.Frame`` with the codec's ``pack()``: no
encoder context is opened. It needs ``pts`` and ``time_base`` (RTP timestamp = pts at 90 kHz,
or 48 kHz for Opus); the tap sets both. No per-subscriber rebasing is done: the sender adds
its own random 32-bit timestamp origin and wraps modulo 2**32, so a subscriber joining an
hour in still gets a valid RTP timeline, and the shared packet is never copied or mutated.

Keyframe requests from the subscriber: aiortc routes a received PLI/FIR to the sender's
``_send_keyframe()``, which only raises a flag for its encoder, so with packets it is lost.
:func:`forward_keyframe_requests` shadows that method *on one sender instance* (no class
patch, no subclass that aiortc would not instantiate) and turns it into a throttled keyframe
request on the forwarder. The original method still runs, so an encoding sender behaves as
before.

Frame anchoring: a subscriber names the frame it drew on by the RTP timestamp it received,
which is the source timestamp plus its sender's random origin. Each subscription keeps that
origin (``rtp_origin``): the lean sender gives it, and with aiortc's own send loop it is read
back once from the sender's last sent timestamp, so either sender anchors annotations.

Codec check: the sender packetizes with *its* negotiated codec, whatever the bytes are. A leg
that negotiated another codec than the publisher's is refused on its first ``recv()`` (the
track ends) rather than fed undecodable packets.
"""

from __future__ import annotations

import fractions
import logging

import av
from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from orbridge.media import aiortc_compat, lean_sender
from orbridge.media.codecs import negotiated_codec, prefer_codec
from orbridge.media.forwarder import Subscriber, SubscriberClosed, TrackForwarder

logger = logging.getLogger(__name__)

__all__ = ["SubscriberTrack", "add_subscriber_track", "forward_keyframe_requests"]

_CLOCK = {"video": fractions.Fraction(1, 90000), "audio": fractions.Fraction(1, 48000)}


def unwrap(timestamp: int, near: int | None) -> int:
    """The 32-bit `timestamp` on the 2^32 lap closest to `near` (13 h at 90 kHz)."""
    if near is None:
        return timestamp
    return timestamp + round((near - timestamp) / 2**32) * 2**32


class SubscriberTrack(MediaStreamTrack):
    """``MediaStreamTrack`` whose ``recv()`` returns the subscriber's next ``av.Packet``.

    The subscription starts on the sender's first ``recv()``, i.e. once the subscriber's
    peer is connected: subscribing earlier would queue the requested keyframe and everything
    after it during ICE/DTLS, then send that stale burst. Stopping the track (the sender does
    when it stops) closes the subscriber, so the forwarder stops queueing for a peer that left.
    """

    def __init__(
        self, forwarder: TrackForwarder, *, maxsize: int | None = None, name: str | None = None
    ) -> None:
        super().__init__()
        self.kind = forwarder.kind
        self.forwarder = forwarder
        self._maxsize = maxsize
        self._name = name
        self.subscriber: Subscriber | None = None
        self.transceiver: RTCRtpTransceiver | None = None
        """Set by :func:`add_subscriber_track`; enables the codec check on first ``recv()``."""
        self.rtp_origin: int | None = None
        """RTP timestamp on the wire minus the source timestamp (mod 2^32), once known."""
        self._last_ts: int | None = None  # RTP clock of the packet returned last

    def start(self) -> Subscriber:
        """Subscribe now (idempotent); ``recv()`` does it implicitly.

        Raises :class:`SubscriberClosed` if this leg negotiated another codec than the
        publisher's: its sender would mislabel every packet, so the leg gets nothing.
        """
        if self.subscriber is None:
            self._check_codec()
            self.subscriber = self.forwarder.subscribe(maxsize=self._maxsize, name=self._name)
        return self.subscriber

    def _check_codec(self) -> None:
        expected = self.forwarder.codec
        if expected is None or self.transceiver is None:
            return
        actual = negotiated_codec(self.transceiver)
        if actual is None or actual.lower() != expected.lower():
            self.forwarder.stats.subscribers_rejected += 1
            logger.warning("%s: subscriber leg negotiated %s, publisher sends %s",
                           self.forwarder, actual, expected)  # fmt: skip
            raise SubscriberClosed(f"codec mismatch: {actual} != {expected}")

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self.rtp_origin is None and self._last_ts is not None:
            self._learn_origin()
        try:
            subscriber = self.subscriber or self.start()
            packet = await subscriber.get()
        except SubscriberClosed:
            self.stop()
            raise MediaStreamError from None
        if self.rtp_origin is None and packet.pts is not None and packet.time_base is not None:
            self._last_ts = int(packet.pts * packet.time_base / _CLOCK[self.kind])
        return packet

    def _learn_origin(self) -> None:
        """Asked for the next packet, the sender has sent the previous one: its timestamp on
        the wire minus the packet's own is this subscription's origin."""
        if self.transceiver is None or self._last_ts is None:
            return
        sent = aiortc_compat.last_rtp_timestamp(self.transceiver.sender)
        if sent is not None:
            self.rtp_origin = (sent - self._last_ts) & 0xFFFFFFFF

    def source_timestamp(self, rtp_timestamp: int, near: int | None) -> int | None:
        """The source frame's timestamp for an RTP timestamp this subscription sent, or None
        before its origin is known. ``near`` (the track's latest) picks the 2^32 lap."""
        if self.rtp_origin is None:
            return None
        return unwrap((rtp_timestamp - self.rtp_origin) & 0xFFFFFFFF, near)

    def request_keyframe(self, reason: str = "subscriber") -> bool:
        if self.subscriber is None:
            return False  # not flowing yet: the first recv() requests one anyway
        return self.subscriber.request_keyframe(reason)

    def stop(self) -> None:
        super().stop()
        if self.subscriber is not None:
            self.subscriber.close()


def forward_keyframe_requests(sender: RTCRtpSender, track: SubscriberTrack) -> None:
    """Make PLI/FIR received on ``sender`` a (throttled) keyframe request upstream."""

    def requested() -> None:
        if track.subscriber is not None:
            track.subscriber.stats.keyframe_requests_received += 1
        track.request_keyframe("subscriber PLI/FIR")

    aiortc_compat.on_keyframe_request(sender, requested)


def add_subscriber_track(
    pc: RTCPeerConnection,
    forwarder: TrackForwarder,
    *,
    codec: str | None = None,
    maxsize: int | None = None,
    name: str | None = None,
    fast: bool = True,
) -> tuple[RTCRtpTransceiver, SubscriberTrack]:
    """Add a send-only transceiver fed by ``forwarder`` to a subscriber's peer connection.

    Restricts it to ``codec`` (default: the forwarder's codec, else VP8/opus), wires the
    subscriber's PLI/FIR to the forwarder, and lets the track refuse to forward if the leg
    ends up with another codec than the publisher's. Call before ``createOffer``.
    ``fast`` sends through media/lean_sender.py (payloads shared by all subscribers) instead of
    aiortc's own send loop.
    """
    track = SubscriberTrack(forwarder, maxsize=maxsize, name=name)
    transceiver = pc.addTransceiver(track, direction="sendonly")
    track.transceiver = transceiver
    prefer_codec(transceiver, codec or forwarder.codec)
    forward_keyframe_requests(transceiver.sender, track)
    if fast:
        lean_sender.install(transceiver.sender, forwarder.payload_cache)
    return transceiver, track
