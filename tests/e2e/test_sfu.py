"""The SFU through the real protocol: aiortc clients publish and subscribe via the server."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import (
    AudioStreamTrack,
    MediaStreamError,
    MediaStreamTrack,
    VideoStreamTrack,
)

from orbridge.media import tap
from orbridge.media.client import MediaClient, Outgoing
from orbridge.media.ice import sdp_candidate_addresses
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import ProtocolError, RoomClient
from tests.conftest import LiveNode, StartNode


class Pattern(VideoStreamTrack):
    """320x240 moving gradient at 30 fps, encoded by the publisher's own aiortc encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        self.n += 1
        image = np.zeros((240, 320, 3), np.uint8)
        image[:, :, 2] = (np.arange(320) + self.n * 4) % 256
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


@dataclass
class Sink:
    video: int = 0
    audio: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    sources: list[str] = field(default_factory=list)

    async def consume(self, info: dict[str, Any], track: MediaStreamTrack) -> None:
        self.sources.append(info.get("source", "?"))
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.VideoFrame):
                self.video += 1
                self.sizes.add((frame.width, frame.height))
            else:
                self.audio += 1


def decoding(pc: RTCPeerConnection) -> None:
    tap.set_receive_mode(pc, "decode")  # this client wants pictures, unlike the server


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - counters have no event
            await asyncio.sleep(0.05)


async def participant(
    node: LiveNode, role: Role, identity: str, **kw: Any
) -> tuple[RoomClient, MediaClient]:
    room = await node.client("or-1", role, identity=identity, **kw)
    return room, MediaClient(room, on_pc=decoding)


async def test_surgeon_to_experts_and_voice_back(node: LiveNode) -> None:
    before = tap.stats.snapshot()
    expert_room, expert = await participant(node, Role.EXPERT, "dr-wang")
    early = Sink()
    await expert.subscribe(early.consume)

    _, surgeon = await participant(node, Role.SURGEON, "dr-ma")
    voice = Sink()
    await surgeon.subscribe(voice.consume)
    published = await surgeon.publish([Outgoing(Pattern(), "laparoscope")])
    assert [(t["source"], t["kind"], t["codec"]) for t in published] == [
        ("laparoscope", "video", "video/VP8")
    ]
    announced = await expert_room.next_event("track_published")
    assert announced["track"]["participant"] == "dr-ma"

    # a late joiner finds the track in its snapshot and receives it too
    late_room, late = await participant(node, Role.TRAINEE, "student")
    assert late_room.snapshot is not None
    assert [t["source"] for t in late_room.snapshot["tracks"]] == ["laparoscope"]
    late_sink = Sink()
    await late.subscribe(late_sink.consume)

    # the expert talks back to the OR
    await expert.publish([Outgoing(AudioStreamTrack(), "microphone")])
    await until(lambda: early.video > 30 and late_sink.video > 30 and voice.audio > 20)
    assert early.sizes == {(320, 240)} and late_sink.sizes == {(320, 240)}
    assert early.sources == ["laparoscope"]
    assert sorted(late_sink.sources) == ["laparoscope", "microphone"]
    assert voice.sources == ["microphone"] and voice.video == 0  # a surgeon hears, does not watch

    # every candidate offered to clients is on loopback
    assert expert.subscriber is not None and expert.subscriber.remoteDescription is not None
    assert sdp_candidate_addresses(expert.subscriber.remoteDescription.sdp) == {"127.0.0.1"}
    # Decoders and encoders in this process: exactly the clients' (two video decoders, the
    # publisher's one video encoder, the audio codecs) -- the server added none.
    after = tap.stats.snapshot()
    assert after["video_encoders_created"] - before["video_encoders_created"] == 1
    assert after["video_decoders_created"] - before["video_decoders_created"] == 2
    stats = node.node.media.stats()
    assert (stats["sessions"], stats["tracks"], stats["subscriptions"]) == (3, 2, 4)
    assert stats["frames_in"] > 30 and stats["lag_events"] == 0
    for c in (expert, surgeon, late):
        await c.close()


async def test_track_ended_and_published_again(node: LiveNode) -> None:
    expert_room, expert = await participant(node, Role.EXPERT, "dr-wang")
    sink = Sink()
    await expert.subscribe(sink.consume)
    surgeon_room, surgeon = await participant(node, Role.SURGEON, "dr-ma")
    first = await surgeon.publish([Outgoing(Pattern(), "laparoscope")])
    await until(lambda: sink.video > 10)

    # the OR leaves: the expert is told, the track is gone from the snapshot
    await surgeon.close()
    await surgeon_room.close()
    ended = await expert_room.next_event("track_ended")
    assert ended["track"]["id"] == first[0]["id"]
    assert (await expert_room.request("snapshot"))["tracks"] == []

    # it comes back and publishes again: the expert sees video without doing anything
    surgeon_room, surgeon = await participant(node, Role.SURGEON, "dr-ma")
    await surgeon.publish([Outgoing(Pattern(), "laparoscope")])
    seen = sink.video
    await until(lambda: sink.video > seen + 20)
    assert expert.offers_answered >= 3  # first track, its end, the new track
    await surgeon.close()
    await expert.close()


async def test_unpublish_keeps_the_connection(node: LiveNode) -> None:
    expert_room, expert = await participant(node, Role.EXPERT, "dr-wang")
    await expert.subscribe(Sink().consume)
    surgeon_room, surgeon = await participant(node, Role.SURGEON, "dr-ma")
    tracks = await surgeon.publish([Outgoing(Pattern(), "laparoscope")])
    assert await surgeon.unpublish() == [tracks[0]["id"]]
    assert (await expert_room.next_event("track_ended"))["reason"] == "unpublished"
    assert await surgeon_room.request("snapshot")
    await surgeon.close()
    await expert.close()


@pytest.mark.parametrize(
    ("role", "kind"),
    [
        (Role.TRAINEE, "video"),
        (Role.TRAINEE, "audio"),
        (Role.DEVICE, "video"),
        (Role.EXPERT, "video"),
    ],
)
async def test_publishing_needs_the_grant(node: LiveNode, role: Role, kind: str) -> None:
    room, media = await participant(node, role, "someone")
    track: MediaStreamTrack = Pattern() if kind == "video" else AudioStreamTrack()
    with pytest.raises(ProtocolError) as err:
        await media.publish([Outgoing(track, "camera")])
    assert err.value.code == "forbidden"
    assert (await room.request("snapshot"))["tracks"] == []
    await media.close()


async def test_expert_camera_with_the_optional_grant(node: LiveNode) -> None:
    _, media = await participant(node, Role.EXPERT, "dr-cam", extra_grants={"publish_video"})
    tracks = await media.publish([Outgoing(Pattern(), "camera")])
    assert tracks[0]["source"] == "camera"
    await media.close()


BAD = [
    ("publish", {"sdp": "hello there"}, "invalid_sdp"),
    ("publish", {"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "tracks": []}, "invalid_sdp"),
    ("publish", {"sdp": "v=0" + "x" * 60000}, "payload_too_large"),
    ("publish", {"sdp": "v=0\r\n...", "tracks": [{"mid": "0", "source": "ceiling"}]},
     "invalid_payload"),
    ("publish", {"sdp": "v=0 m=", "tracks": [{"mid": "0", "source": "laparoscope"}] * 2},
     "invalid_payload"),
    ("subscriber_answer", {"sdp": "v=0\r\nm=video"}, "unexpected_answer"),
    ("unpublish", {"track_ids": ["TR_000000000000"]}, "not_found"),
    ("unpublish", {"track_ids": ["../x"]}, "invalid_payload"),
]  # fmt: skip


@pytest.mark.parametrize(("event", "payload", "code"), BAD)
async def test_bad_media_requests(node: LiveNode, event: str, payload: Any, code: str) -> None:
    room = await node.client("or-1", Role.SURGEON, identity="dr-ma")
    with pytest.raises(ProtocolError) as err:
        await room.request(event, payload)
    assert err.value.code == code
    assert await room.request("snapshot")  # still connected and joined
    assert node.node.media.stats()["tracks"] == 0


async def test_missing_source_for_a_sent_track(node: LiveNode) -> None:
    room = await node.client("or-1", Role.SURGEON, identity="dr-ma")
    pc = RTCPeerConnection()
    pc.addTransceiver(Pattern(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    with pytest.raises(ProtocolError) as err:
        await room.request("publish", {"sdp": pc.localDescription.sdp, "tracks": []})
    assert err.value.code == "invalid_payload" and "source" in err.value.message
    await pc.close()


def mutations(sdp: str, count: int, seed: int) -> list[str]:
    """Broken variants of a real offer: lines dropped, duplicated, cut or with their values
    swapped for other lines' (what a fuzzer or a buggy client sends)."""
    rng = random.Random(seed)
    lines = sdp.strip().split("\r\n")
    out = []
    for _ in range(count):
        mutated = list(lines)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(1, len(mutated))
            op = rng.choice(("drop", "dup", "cut", "swap", "number"))
            if op == "drop":
                del mutated[i]
            elif op == "dup":
                mutated.insert(i, mutated[i])
            elif op == "cut":
                mutated[i] = mutated[i][: rng.randrange(0, len(mutated[i]) + 1)]
            elif op == "swap":
                j = rng.randrange(1, len(mutated))
                head = mutated[i].split(":", 1)[0]
                tail = mutated[j].split(":", 1)[-1]
                mutated[i] = f"{head}:{tail}"
            else:
                mutated[i] = mutated[i].replace("9", str(rng.choice([0, 65536, -1, 2**40])), 1)
        out.append("\r\n".join(mutated) + "\r\n")
    return out


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
async def test_a_broken_offer_is_always_refused_in_our_words(
    start_node: StartNode, seed: int
) -> None:
    """200 broken variants of a real offer: each is answered (ok, or a media error code),
    never internal_error, and the connection stays usable."""
    node = await start_node(event_rate=1000, event_burst=1000)  # the fuzz, not the limiter
    room = await node.client("or-1", Role.SURGEON, identity="dr-ma")
    pc = RTCPeerConnection()
    pc.addTransceiver(Pattern(), direction="sendonly")
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    tracks = [{"mid": "0", "source": "laparoscope"}, {"mid": "1", "source": "microphone"}]
    codes: dict[str, int] = {}
    for sdp in mutations(pc.localDescription.sdp, 200, seed=seed):
        try:
            await room.request("publish", {"sdp": sdp, "tracks": tracks})
            codes["ok"] = codes.get("ok", 0) + 1
            await room.request("unpublish", {})
        except ProtocolError as exc:
            codes[exc.code] = codes.get(exc.code, 0) + 1
            assert "Error" not in exc.message and "/" not in exc.message, exc.message
    await pc.close()
    assert "internal_error" not in codes, codes
    assert set(codes) <= {"ok", "invalid_sdp", "codec_unsupported", "invalid_payload"}, codes
    assert await room.request("snapshot")


async def test_the_publisher_is_answered_before_any_subscriber_is_offered(
    node: LiveNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slow subscriber (its offer held until we release it) never delays the OR."""
    expert_room, expert = await participant(node, Role.EXPERT, "dr-wang")
    sink = Sink()
    await expert.subscribe(sink.consume)
    router = node.node.media
    release = asyncio.Event()
    original = router.subscribing.negotiate

    async def slow(session: Any) -> None:
        if session.identity == "dr-wang":
            await release.wait()
        await original(session)

    monkeypatch.setattr(router.subscribing, "negotiate", slow)
    _, surgeon = await participant(node, Role.SURGEON, "dr-ma")
    published = await surgeon.publish([Outgoing(Pattern(), "laparoscope")])
    assert [t["source"] for t in published] == ["laparoscope"]  # answered: the OR is sending
    assert (await expert_room.next_event("track_published"))["track"]["participant"] == "dr-ma"
    assert expert.offers_answered == 0  # the expert's offer is still held
    release.set()
    await until(lambda: sink.video > 10)
    for c in (expert, surgeon):
        await c.close()


# stalled tracks: the publisher stays connected, its media stops -------------------------


class Pausable(MediaStreamTrack):
    """A source whose frames can stop while its peer connection stays up: paused, `recv`
    waits, so the sender sends no RTP while ICE consent, DTLS and RTCP go on (a hung capture
    pipeline, a frozen OR laptop). Resumed, its timestamps jump by the pause, as a camera's."""

    def __init__(self, source: MediaStreamTrack, paused: bool = False) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.running = asyncio.Event()
        if not paused:
            self.running.set()
        self.paused_at = time.time()
        self.last_frame: float | None = None  # wall clock of the last frame handed to the sender
        self.frames = 0

    def pause(self) -> None:
        self.running.clear()
        self.paused_at = time.time()

    def resume(self) -> None:
        source: Any = self.source
        if hasattr(source, "_timestamp"):
            rate = 90000 if self.kind == "video" else 8000  # aiortc's synthetic sources
            source._timestamp += int((time.time() - self.paused_at) * rate)
        self.running.set()

    async def recv(self) -> Any:
        await self.running.wait()
        frame = await self.source.recv()
        self.last_frame = time.time()
        self.frames += 1
        return frame


class Heard:
    """Stall events as an expert's client got them, each with its arrival (wall clock)."""

    def __init__(self, room: RoomClient) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        for name in ("track_stalled", "track_resumed"):
            room.on(name, self._handler(name))

    def _handler(self, name: str) -> Callable[[Any], Any]:
        async def handle(data: Any) -> None:
            self.events.append((time.time(), name, data))

        return handle

    def of(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        return [(at, data) for at, event, data in self.events if event == name]


def stalls_counted(node: LiveNode, kind: str) -> float:
    value = node.node.metrics.registry.get_sample_value(
        "orbridge_track_stalls_total", {"kind": kind}
    )
    return value or 0.0


async def test_a_frozen_publisher_is_told_stalled_then_resumed(node: LiveNode) -> None:
    """The OR's camera stops (its connection stays up): the experts hear `track_stalled`
    within timeout + 1 s of its last frame, once, and `track_resumed` when it comes back."""
    timeout = node.node.settings.track_stall_timeout
    assert timeout == 1.5  # the default
    expert_room, expert = await participant(node, Role.EXPERT, "dr-wang")
    heard = Heard(expert_room)
    sink = Sink()
    await expert.subscribe(sink.consume)
    _, surgeon = await participant(node, Role.SURGEON, "dr-ma")
    camera, mic = Pausable(Pattern()), Pausable(AudioStreamTrack())
    video, _ = await surgeon.publish([Outgoing(camera, "laparoscope"), Outgoing(mic, "microphone")])
    await until(lambda: sink.video > 30 and sink.audio > 30)

    camera.pause()
    assert surgeon.publisher is not None
    async with asyncio.timeout(timeout + 3):
        while not heard.of("track_stalled"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert camera.last_frame is not None
    (told_at, stalled), *_ = heard.of("track_stalled")
    after = told_at - camera.last_frame
    print(f"\ntrack_stalled {after * 1000:.0f} ms after the last frame (timeout {timeout} s)")
    assert timeout <= after <= timeout + 1.0
    assert stalled["track"] == {k: v for k, v in video.items() if k != "mid"}  # as published
    assert abs(stalled["last_frame_ms"] - camera.last_frame * 1000) < 300
    assert timeout * 1000 < stalled["stalled_ms"] - stalled["last_frame_ms"] <= timeout * 1000 + 400
    assert surgeon.publisher.connectionState == "connected"  # nothing else noticed

    # a late joiner sees it frozen; the microphone goes on and is not stalled
    late = await node.client("or-1", Role.TRAINEE, identity="student")
    assert late.snapshot is not None
    states = {t["kind"]: t for t in late.snapshot["tracks"]}
    assert states["video"]["stalled"] is True
    assert states["video"]["last_frame_ms"] == stalled["last_frame_ms"]
    assert states["audio"]["stalled"] is False
    assert abs(states["audio"]["last_frame_ms"] - time.time() * 1000) < 500
    assert stalls_counted(node, "video") == 1 and stalls_counted(node, "audio") == 0

    await asyncio.sleep(1.5)  # still frozen: said once
    assert len(heard.of("track_stalled")) == 1 and heard.of("track_resumed") == []

    seen = sink.video
    camera.resume()
    resumed_at = time.time()
    async with asyncio.timeout(3):
        while not heard.of("track_resumed"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    (back_at, resumed), *_ = heard.of("track_resumed")
    print(f"track_resumed {(back_at - resumed_at) * 1000:.0f} ms after the source resumed,"
          f" stalled_for_ms {resumed['stalled_for_ms']}")  # fmt: skip
    assert resumed["track"]["id"] == video["id"]
    assert back_at - resumed_at < 1.0
    gap = resumed["last_frame_ms"] - stalled["last_frame_ms"]
    assert abs(resumed["stalled_for_ms"] - gap) <= 2
    assert abs(resumed["stalled_for_ms"] - (resumed_at - camera.paused_at) * 1000) < 400
    assert resumed["last_frame_ms"] >= stalled["stalled_ms"]
    await until(lambda: sink.video > seen + 20, within=5)  # the picture is back
    snapshot = await expert_room.request("snapshot")
    assert all(t["stalled"] is False for t in snapshot["tracks"])
    assert [e for _, e, _ in heard.events] == ["track_stalled", "track_resumed"]
    for c in (expert, surgeon):
        await c.close()


async def test_a_normal_stream_is_never_stalled(node: LiveNode) -> None:
    """Five seconds of video and audio (publish, ICE and DTLS included): no stall event."""
    expert_room, expert = await participant(node, Role.EXPERT, "dr-wang")
    heard = Heard(expert_room)
    sink = Sink()
    await expert.subscribe(sink.consume)
    _, surgeon = await participant(node, Role.SURGEON, "dr-ma")
    await surgeon.publish(
        [Outgoing(Pattern(), "laparoscope"), Outgoing(AudioStreamTrack(), "microphone")]
    )
    await asyncio.sleep(5)
    assert sink.video > 100 and sink.audio > 150
    assert heard.events == []
    snapshot = await expert_room.request("snapshot")
    for track in snapshot["tracks"]:
        assert track["stalled"] is False
        assert abs(track["last_frame_ms"] - time.time() * 1000) < 500
    assert node.node.media.stats()["stalled"] == 0 and stalls_counted(node, "video") == 0
    for c in (expert, surgeon):
        await c.close()


async def test_a_track_that_never_sends_a_frame(start_node: Any) -> None:
    """Connected, but its first frame never comes: stalled (counted from its publish, with
    no last frame), resumed at the first one. A shorter timeout keeps the test short."""
    node = await start_node(track_stall_timeout=0.5)
    expert_room, expert = await participant(node, Role.EXPERT, "dr-wang")
    heard = Heard(expert_room)
    sink = Sink()
    await expert.subscribe(sink.consume)
    _, surgeon = await participant(node, Role.SURGEON, "dr-ma")
    camera = Pausable(Pattern(), paused=True)
    published_at = time.time()
    (video,) = await surgeon.publish([Outgoing(camera, "laparoscope")])
    async with asyncio.timeout(5):
        while not heard.of("track_stalled"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    (told_at, stalled), *_ = heard.of("track_stalled")
    assert stalled["track"]["id"] == video["id"] and stalled["last_frame_ms"] is None
    assert 0.5 <= told_at - published_at <= 0.5 + 1.0
    camera.resume()
    async with asyncio.timeout(3):
        while not heard.of("track_resumed"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert heard.of("track_resumed")[0][1]["stalled_for_ms"] >= 500
    await until(lambda: sink.video > 10, within=5)
    for c in (expert, surgeon):
        await c.close()
