"""Stalled tracks (media/stall.py): judged with a fake clock, then the watch's own loop."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import av
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from orbridge.media.forwarder import TrackForwarder
from orbridge.media.router import MediaConfig, MediaRouter
from orbridge.media.session import PublishedTrack
from orbridge.media.stall import StallWatch, check_interval

EPOCH = 1_795_317_940.0  # the fake wall clock's zero (seconds)


class Clock:
    """Monotonic and wall clocks that move only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + (self.now - 100.0)

    def ms(self, at: float) -> int:
        """The wall-clock ms of monotonic time `at`."""
        return round((EPOCH + at - 100.0) * 1000)


class Source(MediaStreamTrack):
    """A tapped track: yields the packets pushed into it, ends on None."""

    kind = "video"

    def __init__(self, kind: str = "video") -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[av.Packet | None] = asyncio.Queue()
        self.n = 0

    def push(self) -> None:
        packet = av.Packet(b"\x00")
        packet.pts, self.n = self.n, self.n + 1
        packet.time_base = fractions.Fraction(1, 90000)
        packet.is_keyframe = True
        self.queue.put_nowait(packet)

    async def recv(self) -> av.Packet:
        packet = await self.queue.get()
        if packet is None:
            raise MediaStreamError
        return packet


async def settle(source: Source) -> None:
    while not source.queue.empty():  # noqa: ASYNC110 - the reader takes them in its own time
        await asyncio.sleep(0)
    await asyncio.sleep(0)


def published(forwarder: TrackForwarder, n: int = 0, owner: str = "dr-ma") -> PublishedTrack:
    kind = forwarder.kind
    return PublishedTrack(
        id=f"TR_{n:012d}", room="or-1", owner=owner, owner_sid=owner,
        source="laparoscope" if kind == "video" else "microphone", kind=kind,
        codec="video/VP8" if kind == "video" else "audio/opus", mid=str(n),
        forwarder=forwarder, keyframes=None,
    )  # fmt: skip


@dataclass
class Room:
    """The watch's world: tracks, which publishers are connected, what was told."""

    clock: Clock
    tracks: list[PublishedTrack] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # owners whose connection is not up
    told: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    forwarders: list[TrackForwarder] = field(default_factory=list)

    def watch(self, timeout: float = 1.5) -> StallWatch:
        return StallWatch(
            timeout,
            tracks=lambda: list(self.tracks),
            is_up=lambda t: t.owner not in self.down,
            emit=lambda t, event, data: self.told.append((event, data)),
            clock=self.clock,
            wall=self.clock.wall,
        )

    def publish(self, watch: StallWatch, kind: str = "video", owner: str = "dr-ma") -> Source:
        source = Source(kind)
        forwarder = TrackForwarder(source, clock=self.clock, name=f"{owner}/{kind}")
        forwarder.start()
        self.forwarders.append(forwarder)
        track = published(forwarder, len(self.tracks), owner)
        self.tracks.append(track)
        watch.watch(track)
        return source

    def events(self) -> list[str]:
        return [event for event, _ in self.told]


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    world = Room(Clock())
    yield world
    for forwarder in world.forwarders:
        await forwarder.stop()


async def test_stalled_once_then_resumed_at_the_first_frame(room: Room) -> None:
    clock = room.clock
    watch = room.watch()
    source = room.publish(watch)
    track = room.tracks[0]
    source.push()
    await settle(source)  # a frame at 100.0
    clock.now = 101.5
    assert watch.check() == 0  # exactly the timeout: not yet
    assert watch.state(track) == {"stalled": False, "last_frame_ms": clock.ms(100.0)}

    clock.now = 101.6
    assert watch.check() == 1
    event, data = room.told[0]
    assert event == "track_stalled"
    assert data == {"track": track.public(), "last_frame_ms": clock.ms(100.0),
                    "stalled_ms": clock.ms(101.6)}  # fmt: skip
    assert watch.state(track) == {"stalled": True, "last_frame_ms": clock.ms(100.0)}

    for later in (102.0, 105.0, 130.0):  # still frozen: said once, never again
        clock.now = later
        assert watch.check() == 0
    assert room.events() == ["track_stalled"]

    clock.now = 133.25
    source.push()
    await settle(source)  # told on the frame itself, before any check
    event, data = room.told[1]
    assert event == "track_resumed"
    assert data == {"track": track.public(), "last_frame_ms": clock.ms(133.25),
                    "stalled_for_ms": 33250}  # fmt: skip
    assert watch.state(track) == {"stalled": False, "last_frame_ms": clock.ms(133.25)}

    # frames keep coming: nothing; then they stop again: a second stall, told again
    for step in range(1, 20):
        clock.now = 133.25 + step * 0.1
        source.push()
        await settle(source)
        assert watch.check() == 0
    clock.now += 1.51
    assert watch.check() == 1
    assert room.events() == ["track_stalled", "track_resumed", "track_stalled"]
    assert room.told[2][1]["last_frame_ms"] == clock.ms(133.25 + 1.9)
    assert (watch.stalls, watch.resumes) == (2, 1)


async def test_a_track_without_frames_counts_from_its_publish(room: Room) -> None:
    clock = room.clock
    watch = room.watch()
    room.publish(watch)
    clock.now = 101.4
    assert watch.check() == 0
    clock.now = 101.6
    assert watch.check() == 1
    event, data = room.told[0]
    assert event == "track_stalled" and data["last_frame_ms"] is None
    assert data["stalled_ms"] == clock.ms(101.6)
    assert watch.state(room.tracks[0]) == {"stalled": True, "last_frame_ms": None}


async def test_waiting_for_the_connection_is_not_a_stall(room: Room) -> None:
    """ICE and DTLS take their time: a frameless track counts from its connection coming up."""
    clock = room.clock
    watch = room.watch()
    source = room.publish(watch)
    room.down.add("dr-ma")
    for at in (100.5, 102.0, 104.0):
        clock.now = at
        assert watch.check() == 0
    room.down.clear()  # connected between the checks at 104 and 104.25: counts from 104
    clock.now = 104.25
    assert watch.check() == 0
    clock.now = 105.5
    assert watch.check() == 0
    clock.now = 105.6
    assert watch.check() == 1
    clock.now = 106.0
    source.push()
    await settle(source)
    assert room.told[1][0] == "track_resumed"
    assert room.told[1][1]["stalled_for_ms"] == 2000


async def test_a_connection_that_is_not_up_is_not_judged(room: Room) -> None:
    clock = room.clock
    watch = room.watch()
    source = room.publish(watch)
    source.push()
    await settle(source)
    room.down.add("dr-ma")  # not "connected" (its end, connection_lost, is the router's)
    clock.now = 110.0
    assert watch.check() == 0 and room.told == []


async def test_one_silent_track_among_live_ones(room: Room) -> None:
    """Audio is judged like video; each track on its own."""
    clock = room.clock
    watch = room.watch()
    video = room.publish(watch, "video")
    audio = room.publish(watch, "audio")
    other = room.publish(watch, "video", owner="dr-li")
    for step in range(1, 40):  # 2 s: audio and the other camera go on, the laparoscope stops
        clock.now = 100.0 + step * 0.05
        audio.push()
        other.push()
        if clock.now < 100.4:
            video.push()
        await settle(audio)
        await settle(other)
        await settle(video)
        watch.check()
    assert room.events() == ["track_stalled"]
    assert room.told[0][1]["track"]["id"] == room.tracks[0].id
    clock.now = 103.5  # and now nothing from anyone since 101.95
    assert watch.check() == 2
    assert [d["track"]["kind"] for _, d in room.told] == ["video", "audio", "video"]
    assert room.told[1][1]["last_frame_ms"] == clock.ms(101.95)


async def test_ended_and_unread_tracks_are_never_judged(room: Room) -> None:
    clock = room.clock
    watch = room.watch()
    room.publish(watch)
    await room.forwarders[0].stop()  # ended
    unread = TrackForwarder(Source(), clock=clock)  # never started (the benchmark's relay)
    room.tracks.append(published(unread, 9, owner="x"))
    clock.now = 200.0
    assert watch.check() == 0 and room.told == []


async def test_a_failing_listener_never_stops_the_reader(
    room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    clock = room.clock
    watch = room.watch()
    source = room.publish(watch)
    forwarder = room.forwarders[0]
    watch.check()
    clock.now = 102.0
    assert watch.check() == 1

    def broken(now: float) -> None:
        raise RuntimeError("boom")

    forwarder.on_resumed = broken
    with caplog.at_level(logging.ERROR, "orbridge.media.forwarder"):
        source.push()
        await settle(source)
        source.push()
        await settle(source)
    assert forwarder.reading and forwarder.stats.frames_in == 2
    assert "on_resumed callback failed" in caplog.text


def test_the_check_interval() -> None:
    assert check_interval(1.5) == 0.25
    assert check_interval(0.4) == 0.1
    assert check_interval(0.01) == 0.05
    with pytest.raises(ValueError):
        StallWatch(0, tracks=list, is_up=bool, emit=lambda *a: None)


# the watch's own loop, on the real clock ------------------------------------------------


async def test_the_loop_tells_within_the_timeout_and_a_tick(room: Room) -> None:
    told: list[tuple[float, str]] = []
    tracks: list[PublishedTrack] = []
    watch = StallWatch(0.3, tracks=lambda: tracks, is_up=lambda t: True,
                       emit=lambda t, e, d: told.append((time.monotonic(), e)))  # fmt: skip
    source = Source()
    forwarder = TrackForwarder(source)
    forwarder.start()
    room.forwarders.append(forwarder)
    tracks.append(published(forwarder, 1))
    watch.watch(tracks[0])
    task = asyncio.get_running_loop().create_task(watch.run())
    try:
        async with asyncio.timeout(5):
            for _ in range(20):  # 1 s of 50 fps: never stalled
                source.push()
                await asyncio.sleep(0.02)
            last = time.monotonic()
            assert told == []
            while not told:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            delay = told[0][0] - last
            assert told[0][1] == "track_stalled"
            assert 0.3 <= delay <= 0.3 + watch.interval + 0.1, delay
            await asyncio.sleep(0.5)
            assert len(told) == 1  # once
            source.push()
            while len(told) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            assert told[1][1] == "track_resumed"
            tracks.clear()  # the last track ended: the loop ends with it
            await task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_failing_check_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def tracks() -> list[Any]:
        return [object()]  # not a track: check() fails on it

    watch = StallWatch(0.2, tracks=tracks, is_up=bool, emit=lambda *a: None)
    with caplog.at_level(logging.ERROR, "orbridge.media"):
        task = asyncio.get_running_loop().create_task(watch.run())
        await asyncio.sleep(0.4)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    failures = [r for r in caplog.records if r.getMessage() == "stall check failed"]
    assert len(failures) >= 3  # logged every time, the loop went on


async def test_a_late_check_judges_nothing() -> None:
    """The event loop was busy: frames may be waiting in queues, so that check is skipped."""
    told: list[str] = []
    tracks: list[PublishedTrack] = []
    watch = StallWatch(0.2, tracks=lambda: tracks, is_up=lambda t: True,
                       emit=lambda t, e, d: told.append(e))  # fmt: skip
    source = Source()
    forwarder = TrackForwarder(source)
    forwarder.start()
    tracks.append(published(forwarder, 2))
    watch.watch(tracks[0])
    task = asyncio.get_running_loop().create_task(watch.run())
    try:
        source.push()
        await asyncio.sleep(0.01)
        time.sleep(0.4)  # block the loop (a frame arrives meanwhile, unread)  # noqa: ASYNC251
        source.push()
        await asyncio.sleep(0.03)
        assert watch.late_checks == 1 and told == []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await forwarder.stop()


# the router's side: events in order, the hook counted, the snapshot's fields ---------


class SlowSignals:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def send(self, sid: str, event: str, data: dict[str, Any]) -> None:
        pass

    async def broadcast(self, room: str, event: str, data: dict[str, Any]) -> None:
        if event == "track_stalled":
            await asyncio.sleep(0.1)  # a slow first broadcast (Redis) must not be overtaken
        self.sent.append((room, event, data))


async def test_the_router_tells_the_room_in_order_and_counts() -> None:
    signals = SlowSignals()
    router = MediaRouter(MediaConfig(track_stall_timeout=1.5), signals)
    counted: list[str] = []
    router.track_stalled.append(lambda t: counted.append(t.id))
    source = Source()
    forwarder = TrackForwarder(source)
    track = published(forwarder, 3)  # its owner has no session here
    router.register_track(track)
    forwarder.start()
    assert router.stalls.is_up(track) is False  # no session, no publisher connection
    router.stalls.is_up = lambda t: True
    forwarder.last_frame_at -= 2  # nothing for two seconds
    assert router.stalls.check() == 1
    assert router.stats()["stalled"] == 1
    assert router.liveness(track) == {"stalled": True, "last_frame_ms": None}
    source.push()
    await settle(source)
    async with asyncio.timeout(2):
        while len(signals.sent) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert [e for _, e, _ in signals.sent] == ["track_stalled", "track_resumed"]
    assert counted == [track.id]
    assert router.stats()["stalled"] == 0
    await router.end_track(track, "unpublished")
    await router.close_all()
    assert router._stall_task is not None and router._stall_task.done()
