"""Real aiortc peers on 127.0.0.1 for the media tests: a publisher, a tapped server, clients.

Everything runs in one process: the "server" peers use the encoded-frame tap in pass-through
mode (the default), the subscriber *clients* opt into real decoding, as a browser would decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import (
    AudioStreamTrack,
    MediaStreamError,
    MediaStreamTrack,
    VideoStreamTrack,
)

from orbridge.media import aiortc_compat
from orbridge.media.codecs import negotiated_codec, prefer_codec
from orbridge.media.forwarder import TrackForwarder
from orbridge.media.ice import configure_candidate_addresses, rtc_configuration
from orbridge.media.keyframes import KeyframeRequester
from orbridge.media.subscriber_track import SubscriberTrack, add_subscriber_track
from orbridge.media.tap import install_tap, set_receive_mode, uninstall_tap

WIDTH, HEIGHT = 320, 240
CONNECT_TIMEOUT = 10.0


class MovingPattern(VideoStreamTrack):
    """30 fps synthetic video (numpy), encoded by aiortc's own VP8/H.264 encoder on send."""

    def __init__(self, width: int = WIDTH, height: int = HEIGHT) -> None:
        super().__init__()
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([(x * 255) // width, (y * 255) // height, (x ^ y) & 0xFF], axis=-1)
        self._base = base.astype(np.uint8)
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        self._n += 1
        frame = av.VideoFrame.from_ndarray(np.roll(self._base, self._n * 4, axis=1), "rgb24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


def encode_video(
    codec_name: str,
    count: int = 6,
    width: int = 64,
    height: int = 48,
    pix_fmt: str = "yuv420p",
    **options: str,
) -> list[bytes]:
    """``count`` flat grey frames through a real PyAV encoder: its packets' bytes, flushed."""
    encoder = av.CodecContext.create(codec_name, "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, pix_fmt
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = options
    out: list[bytes] = []
    for i in range(count):
        image = np.full((height, width, 3), (i * 40) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, "rgb24").reformat(format=pix_fmt)
        frame.pts = i
        out += [bytes(p) for p in encoder.encode(frame)]
    out += [bytes(p) for p in encoder.encode(None)]
    return out


def count_keyframe_requests(sender: RTCRtpSender) -> Callable[[], int]:
    """Instrument a publisher's sender: how many PLI/FIR it received (keeps their effect)."""
    received = [0]

    def count() -> None:
        received[0] += 1

    aiortc_compat.on_keyframe_request(sender, count)
    return lambda: received[0]


async def negotiate(offerer: RTCPeerConnection, answerer: RTCPeerConnection,
                    before_answer: Callable[[], None] | None = None) -> None:  # fmt: skip
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    if before_answer is not None:
        before_answer()
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


async def wait_connected(*pcs: RTCPeerConnection, within: float = CONNECT_TIMEOUT) -> None:
    async def one(pc: RTCPeerConnection) -> None:
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise AssertionError(f"peer connection {pc.connectionState}")
            await asyncio.sleep(0.02)

    async with asyncio.timeout(within):
        await asyncio.gather(*(one(pc) for pc in pcs))


async def wait_until(predicate: Callable[[], bool], within: float, step: float = 0.02) -> None:
    """Poll ``predicate`` (counters have no event to await) for at most ``within`` seconds."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(step)


@dataclass
class Received:
    """What a decoding client got: counts and a few samples, not every frame (memory)."""

    frames: int = 0
    first_at: float | None = None
    sizes: set[tuple[int, int]] = field(default_factory=set)
    types: set[type] = field(default_factory=set)
    arrivals: list[float] = field(default_factory=list)
    ended: bool = False

    def fps(self, since: float) -> float:
        recent = [t for t in self.arrivals if t >= since]
        span = time.monotonic() - since
        return len(recent) / span if span > 0 else 0.0


@dataclass
class Publisher:
    pc: RTCPeerConnection
    server_pc: RTCPeerConnection
    forwarder: TrackForwarder
    requester: KeyframeRequester | None
    plis_received: Callable[[], int]
    transceiver: RTCRtpTransceiver
    server_transceiver: RTCRtpTransceiver


@dataclass
class Client:
    pc: RTCPeerConnection
    server_pc: RTCPeerConnection
    track: SubscriberTrack
    server_transceiver: RTCRtpTransceiver
    transceiver: RTCRtpTransceiver
    received: Received


class Rig:
    """Builds and tears down the peers of one test (helpers hang off it for the tests)."""

    width = WIDTH
    height = HEIGHT
    wait_until = staticmethod(wait_until)
    wait_connected = staticmethod(wait_connected)
    negotiate = staticmethod(negotiate)
    count_keyframe_requests = staticmethod(count_keyframe_requests)

    def __init__(self) -> None:
        self.pcs: list[RTCPeerConnection] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.forwarders: list[TrackForwarder] = []

    def pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(rtc_configuration())
        self.pcs.append(pc)
        return pc

    async def publisher(self, kind: str = "video", codec: str | None = None,
                        pli_interval: float = 0.5) -> Publisher:  # fmt: skip
        source: MediaStreamTrack = MovingPattern() if kind == "video" else AudioStreamTrack()
        pub = self.pc()
        transceiver = pub.addTransceiver(source, direction="sendonly")
        prefer_codec(transceiver, codec)
        plis = count_keyframe_requests(transceiver.sender)

        server = self.pc()
        set_receive_mode(server, "passthrough")
        tracks: list[MediaStreamTrack] = []
        server.on("track", tracks.append)

        def choose_codec() -> None:
            prefer_codec(server.getTransceivers()[0], codec)

        await negotiate(pub, server, before_answer=choose_codec)
        assert tracks, "server got no remote track"
        server_transceiver = server.getTransceivers()[0]
        requester = None
        if kind == "video":
            requester = KeyframeRequester.for_transceiver(
                server, server_transceiver, min_interval=pli_interval
            )
        forwarder = TrackForwarder(
            tracks[0], keyframes=requester, codec=negotiated_codec(server_transceiver)
        )
        forwarder.start()
        self.forwarders.append(forwarder)
        await wait_connected(pub, server)
        return Publisher(pub, server, forwarder, requester, plis, transceiver, server_transceiver)

    async def client(self, forwarder: TrackForwarder, codec: str | None = None,
                     maxsize: int | None = None, name: str | None = None) -> Client:  # fmt: skip
        server = self.pc()
        server_transceiver, track = add_subscriber_track(
            server, forwarder, codec=codec, maxsize=maxsize, name=name
        )
        client = self.pc()
        set_receive_mode(client, "decode")
        received = Received()

        def on_track(remote: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.get_running_loop().create_task(consume(remote, received)))

        client.on("track", on_track)
        await negotiate(server, client)
        await wait_connected(server, client)
        return Client(client, server, track, server_transceiver, client.getTransceivers()[0],
                      received)  # fmt: skip

    async def close(self) -> None:
        for forwarder in self.forwarders:
            await forwarder.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                await task
        async with asyncio.timeout(10):
            await asyncio.gather(*(pc.close() for pc in self.pcs))


async def consume(track: MediaStreamTrack, received: Received) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            received.ended = True
            return
        now = time.monotonic()
        received.frames += 1
        received.types.add(type(frame))
        if received.first_at is None:
            received.first_at = now
        if isinstance(frame, av.VideoFrame):
            received.sizes.add((frame.width, frame.height))
        received.arrivals.append(now)
        if len(received.arrivals) > 1000:
            del received.arrivals[:500]


@pytest.fixture(autouse=True)
def media_env() -> Iterator[None]:
    """Tap installed (server default: pass-through), ICE on 127.0.0.1 only; undone after."""
    install_tap("passthrough")
    configure_candidate_addresses(["127.0.0.1"])
    try:
        yield
    finally:
        configure_candidate_addresses(None)
        uninstall_tap()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    try:
        yield rig
    finally:
        await rig.close()
