"""TrackForwarder rules, driven by a scripted packet source (deterministic, no network)."""

from __future__ import annotations

import asyncio
import fractions

import av
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from orbridge.media.forwarder import SubscriberClosed, TrackForwarder
from orbridge.media.subscriber_track import SubscriberTrack


class ScriptedTrack(MediaStreamTrack):
    """A tapped-track stand-in: yields the packets pushed into it, then ends."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.Packet | None] = asyncio.Queue()

    def push(self, n: int, keyframe: bool = False) -> None:
        packet = av.Packet(b"\x00" if keyframe else b"\x01")
        packet.pts = n
        packet.time_base = fractions.Fraction(1, 90000)
        packet.is_keyframe = keyframe
        self.queue.put_nowait(packet)

    async def recv(self) -> av.Packet:
        packet = await self.queue.get()
        if packet is None:
            raise MediaStreamError
        return packet


async def settle(track: ScriptedTrack) -> None:
    """Let the forwarder's reader take everything pushed so far."""
    while not track.queue.empty():  # noqa: ASYNC110
        await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_stuck_subscriber_never_holds_back_a_reader() -> None:
    source = ScriptedTrack()
    forwarder = TrackForwarder(source, queue_size=3)
    forwarder.start()
    reader = forwarder.subscribe(name="reader")
    stuck = forwarder.subscribe(name="stuck")  # never read

    source.push(0)  # not a keyframe: both new subscribers drop it
    got = []
    for n in range(1, 7):
        source.push(n, keyframe=(n == 1))
        got.append((await asyncio.wait_for(reader.get(), 1)).pts)

    assert got == [1, 2, 3, 4, 5, 6]
    assert reader.stats.lag_events == 0 and reader.stats.frames_dropped == 1
    # stuck: held 1..3, lagged on 4 (cleared 3 + dropped 4), then dropped 5, 6 waiting.
    assert stuck.qsize() == 0 and stuck.stats.max_queue_len == 3
    assert stuck.stats.lag_events == 1 and stuck.waiting_for_keyframe
    assert stuck.stats.frames_dropped == 1 + 3 + 1 + 2
    assert stuck.stats.keyframe_requests_suppressed == 2  # join + lag; no requester here


async def test_rules_step_by_step() -> None:
    source = ScriptedTrack()
    forwarder = TrackForwarder(source, queue_size=2)
    forwarder.start()
    sub = forwarder.subscribe()
    assert sub.waiting_for_keyframe

    source.push(0)
    await settle(source)
    assert sub.qsize() == 0 and sub.stats.frames_dropped == 1

    source.push(1, keyframe=True)
    source.push(2)
    await settle(source)
    assert sub.qsize() == 2 and not sub.waiting_for_keyframe

    source.push(3)  # full: lagging, queue cleared, wait for a keyframe
    await settle(source)
    assert sub.qsize() == 0 and sub.waiting_for_keyframe and sub.stats.lag_events == 1
    assert sub.stats.frames_dropped == 1 + 2 + 1

    source.push(4)
    source.push(5, keyframe=True)
    await settle(source)
    assert [(await sub.get()).pts] == [5]
    assert forwarder.stats.frames_in == 6 and forwarder.stats.keyframes_in == 2

    # Full when a keyframe arrives: the keyframe is kept as the new start.
    source.push(6)
    source.push(7)
    source.push(8, keyframe=True)
    await settle(source)
    assert sub.qsize() == 1 and sub.get_nowait().pts == 8
    assert sub.stats.lag_events == 2


async def test_end_of_track_closes_subscribers_and_tracks() -> None:
    source = ScriptedTrack()
    forwarder = TrackForwarder(source)
    forwarder.start()
    track = SubscriberTrack(forwarder)
    receiving = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    source.push(0, keyframe=True)
    assert (await asyncio.wait_for(receiving, 1)).pts == 0

    source.queue.put_nowait(None)
    await asyncio.wait_for(forwarder.wait_ended(), 1)
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(track.recv(), 1)
    assert track.readyState == "ended"
    assert forwarder.subscribers == ()
    with pytest.raises(SubscriberClosed):
        forwarder.subscribe()


async def test_stop_track_unsubscribes() -> None:
    source = ScriptedTrack()
    forwarder = TrackForwarder(source)
    forwarder.start()
    track = SubscriberTrack(forwarder)
    subscriber = track.start()
    assert forwarder.subscribers == (subscriber,)
    track.stop()
    assert forwarder.subscribers == () and subscriber.closed
    await forwarder.stop()
    assert forwarder.ended


async def test_decoded_frames_are_drained_not_forwarded() -> None:
    class FrameTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.left = 3

        async def recv(self) -> av.VideoFrame:
            if not self.left:
                raise MediaStreamError
            self.left -= 1
            return av.VideoFrame(16, 16, "yuv420p")

    forwarder = TrackForwarder(FrameTrack())
    sub = forwarder.subscribe()
    forwarder.start()
    await asyncio.wait_for(forwarder.wait_ended(), 1)
    assert forwarder.stats.frames_rejected == 3 and forwarder.stats.frames_in == 0
    assert sub.closed
