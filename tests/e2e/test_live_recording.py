"""Recording a live room (issue #6): a moderator starts and stops it over the protocol, an OR
publishes the synthetic laparoscope (its pictures carry their capture time), an expert draws on
a frame it decoded, a monitor sends vitals, a trainee comes and goes, the OR reconnects.
Then the files are decoded with PyAV and checked against the truth the pictures carry.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from orbridge.media.client import MediaClient, Outgoing
from orbridge.media.sim.sources import SyntheticVideoTrack, wire_keyframe_requests
from orbridge.media.sim.timecode import read_timestamp
from orbridge.recording.eventlog import read_events
from orbridge.recording.manifest import Manifest, Segment
from orbridge.rooms.roles import Role
from orbridge.signaling.cli.client import ProtocolError, RoomClient
from tests.conftest import LiveNode, StartNode
from tests.e2e.test_sfu import decoding, until
from tests.recording.conftest import decode_file

FPS = 30


class Expert:
    """A decoding expert that draws an arrow on one frame it saw, naming that frame by its RTP
    timestamp as a browser's requestVideoFrameCallback would."""

    def __init__(self, room: RoomClient) -> None:
        self.room = room
        self.media = MediaClient(room, on_pc=decoding)
        self.frames = 0
        self.drawn: dict[str, Any] | None = None  # capture ms of the frame, annotation ack

    async def consume(self, info: dict[str, Any], track: MediaStreamTrack) -> None:
        receiver = next(r for r in self.media.subscriber.getReceivers() if r.track is track)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.VideoFrame):
                continue
            self.frames += 1
            if self.frames == 40 and self.drawn is None:
                code = read_timestamp(frame.to_ndarray(format="yuv420p"))
                assert code is not None
                # aiortc hands out pts counted from the first RTP timestamp it saw
                origin = receiver._RTCRtpReceiver__timestamp_mapper._origin  # type: ignore[attr-defined]
                rtp = (origin + frame.pts) & 0xFFFFFFFF
                ack = await self.room.request(
                    "annotate",
                    {"type": "arrow", "track_id": info["id"], "points": [[0.3, 0.3], [0.6, 0.6]],
                     "frame": {"rtp_timestamp": rtp}},
                )  # fmt: skip
                self.drawn = {"capture_ms": code[0], "id": ack["id"]}


async def publish_or(node: LiveNode, identity: str = "dr-ma") -> tuple[RoomClient, MediaClient]:
    room = await node.client("or-1", Role.SURGEON, identity=identity)
    media = MediaClient(room)
    video = SyntheticVideoTrack(320, 240, FPS, 500_000, "VP8", gop_seconds=1.0)  # type: ignore[arg-type]
    await media.publish([Outgoing(video, "laparoscope")])
    assert media.publisher is not None
    wire_keyframe_requests(next(s for s in media.publisher.getSenders() if s.track is video), video)
    return room, media


def frame_at(path: Path, media_time: float) -> tuple[int, int] | None:
    """The timestamp code of the frame presented at ``media_time`` in a file."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if abs(float(frame.time or 0.0) - media_time) < 0.5 / FPS:
                return read_timestamp(frame.to_ndarray(format="yuv420p"))
    return None


async def test_moderator_records_a_live_session(node: LiveNode) -> None:
    moderator = await node.client("or-1", Role.MODERATOR, identity="mod-li")
    trainee = await node.client("or-1", Role.TRAINEE, identity="student-1")
    with pytest.raises(ProtocolError) as err:
        await trainee.request("start_recording", {"consent": "written"})
    assert err.value.code == "forbidden"
    with pytest.raises(ProtocolError) as err:
        await moderator.request("stop_recording", {})
    assert err.value.code == "not_recording"
    with pytest.raises(ProtocolError) as err:
        await moderator.request("start_recording", {"consent": "maybe"})
    assert err.value.code == "invalid_payload"

    expert = Expert(await node.client("or-1", Role.EXPERT, identity="dr-wang"))
    await expert.media.subscribe(expert.consume)
    started = await moderator.request(
        "start_recording",
        {"consent": "written", "procedure": "Laparoscopic cholecystectomy",
         "hospital": "Maduo County People's Hospital", "tags": ["teaching", "gallbladder"]},
    )  # fmt: skip
    assert (await expert.room.next_event("recording_started"))["id"] == started["id"]
    with pytest.raises(ProtocolError) as err:
        await moderator.request("start_recording", {"consent": "written"})
    assert err.value.code == "already_recording"
    late = await node.client("or-1", Role.TRAINEE, identity="student-2")
    assert late.snapshot is not None and late.snapshot["recording"]["id"] == started["id"]

    surgeon_room, surgeon = await publish_or(node)
    device = await node.client("or-1", Role.DEVICE, identity="monitor-1")
    for value in (97, 96, 85):
        await device.request("publish_vitals", {"numerics": [{"kind": "spo2", "value": value}]})
        await asyncio.sleep(0.2)
    await until(lambda: expert.drawn is not None, within=15)
    chapter = await expert.room.request("mark_chapter", {"title": "Calot's triangle"})
    await late.close()

    # the OR's connection drops and it publishes again: a second segment of the same source
    await surgeon.close()
    await surgeon_room.close()
    await asyncio.sleep(0.5)
    surgeon_room, surgeon = await publish_or(node)
    seen = expert.frames
    await until(lambda: expert.frames > seen + 45, within=15)
    stopped = await moderator.request("stop_recording", {})
    assert stopped["id"] == started["id"] and stopped["errors"] == []
    assert (await expert.room.next_event("recording_stopped"))["reason"] == "stopped"
    await surgeon.close()
    await expert.media.close()

    directory = node.node.recordings.store.directory(started["id"])
    manifest = Manifest.load(directory)
    assert manifest.state == "complete" and manifest.room == "or-1"
    assert (manifest.procedure, manifest.tags) == ("Laparoscopic cholecystectomy",
                                                   ["teaching", "gallbladder"])  # fmt: skip
    assert manifest.consent.state == "written" and manifest.consent.by == "mod-li"
    roles = {p.identity: p.role for p in manifest.participants}
    assert roles["dr-wang"] == "expert" and roles["student-2"] == "trainee"
    assert roles["dr-ma"] == "surgeon" and roles["mod-li"] == "moderator"
    [track] = manifest.tracks
    assert (track.source, track.participant, track.codec) == ("laparoscope", "dr-ma", "VP8")
    assert len(track.segments) == 2 and stopped["files"] == [s.file for s in track.segments]
    assert [c.title for c in manifest.chapters] == ["Calot's triangle"]
    assert manifest.chapters[0].t == chapter["t"]

    # every segment decodes completely, with the duration its manifest entry says, and its
    # timeline mapping puts each frame within network delay after its capture
    for segment in track.segments:
        decoded = decode_file(directory / segment.file, read_codes=True)
        assert segment.closed and segment.error is None and segment.duration is not None
        assert decoded.frames == segment.packets > FPS
        assert decoded.duration == pytest.approx(segment.duration, abs=1.5 / FPS)
        assert (segment.width, segment.height) == decoded.size == (320, 240)
        pairs = zip(decoded.times, decoded.codes, strict=True)
        delays = [segment.wall_ms(t) - code[0] for t, code in pairs if code]
        assert len(delays) > 0.9 * decoded.frames
        delays.sort()
        median = delays[len(delays) // 2]
        print(f"capture to timeline: min {delays[0]:.0f} median {median:.0f} max {delays[-1]:.0f}")
        # constant network + jitter-buffer delay; a frame rendered late by a busy CPU shows
        # below the median (its capture code is later than its RTP timestamp)
        assert 0 <= median < 200 and delays[-1] - median < 100, delays

    # the event log, on the one clock
    events = read_events(directory / "events.jsonl")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "recording_started" and kinds[-1] == "recording_stopped"
    assert all(a["t"] <= b["t"] for a, b in itertools.pairwise(events))
    assert kinds.count("track_published") == 2 and kinds.count("track_ended") == 1
    spo2 = [n["value"] for e in events if e["type"] == "vitals" for n in e["batch"]["numerics"]]
    assert spo2 == [97, 96, 85]
    assert any(e["type"] == "alarm_raised" and e["alarm"]["kind"] == "spo2" for e in events)
    assert any(e["type"] == "participant_left" and e["identity"] == "student-2" for e in events)
    assert any(e["type"] == "participant_joined" and e["participant"]["identity"] == "monitor-1"
               for e in events)  # fmt: skip
    assert any(e["type"] == "chapter" and e["title"] == "Calot's triangle" for e in events)

    # the annotation names its frame on the recording's clock: exactly the frame drawn on
    assert expert.drawn is not None
    [drawn] = [e["annotation"] for e in events if e["type"] == "annotation"]
    assert drawn["id"] == expert.drawn["id"]
    segment = next(s for s in track.segments if s.track_id == drawn["track_id"])
    media_time = segment.media_time_of_ts(drawn["frame"]["source_ts"])
    assert media_time is not None and media_time > 0
    code = frame_at(directory / segment.file, media_time)
    assert code is not None and code[0] == expert.drawn["capture_ms"]


async def test_room_policy_records_from_the_first_track(start_node: StartNode) -> None:
    node = await start_node(record_rooms=["or-*"], record_consent="not_required")
    watcher = await node.client("or-1", Role.TRAINEE, identity="student-1")
    _, surgeon = await publish_or(node)
    started = await watcher.next_event("recording_started")
    assert started["policy"] is True and started["consent"] == "not_required"
    await asyncio.sleep(1.5)
    moderator = await node.client("or-1", Role.MODERATOR, identity="mod-li")
    assert moderator.snapshot is not None and moderator.snapshot["recording"]["policy"]
    stopped = await moderator.request("stop_recording", {})
    await surgeon.close()
    manifest = node.node.recordings.store.load(stopped["id"])
    assert manifest.started_by["identity"] == "policy"
    assert [t.source for t in manifest.tracks] == ["laparoscope"]
    assert manifest.tracks[0].segments[0].packets > FPS // 2
    # a room outside the policy is not recorded
    other = await node.client("theatre-9", Role.SURGEON, identity="dr-x")
    other_media = MediaClient(other)
    video = SyntheticVideoTrack(160, 120, 15, 200_000, "VP8")  # type: ignore[arg-type]
    await other_media.publish([Outgoing(video, "laparoscope")])
    await asyncio.sleep(0.5)
    assert node.node.recordings.recording("theatre-9") is None
    await other_media.close()


async def test_disk_full_is_reported_and_nothing_else_breaks(node: LiveNode) -> None:
    moderator = await node.client("or-1", Role.MODERATOR, identity="mod-li")
    expert = Expert(await node.client("or-1", Role.EXPERT, identity="dr-wang"))
    await expert.media.subscribe(expert.consume)
    started = await moderator.request("start_recording", {"consent": "verbal"})
    # The laparoscope's file is on a full disk: writes to /dev/full fail with ENOSPC.
    directory = node.node.recordings.store.directory(started["id"])
    os.symlink("/dev/full", directory / "laparoscope-dr-ma-001.webm")
    _, surgeon = await publish_or(node)
    error = await moderator.next_event("recording_error", wait=10)
    assert error["code"] == "disk_full" and error["id"] == started["id"]
    assert error["message"] == "laparoscope-dr-ma: the recording disk is full"  # no path, no errno
    # the room goes on: the expert keeps receiving video
    seen = expert.frames
    await until(lambda: expert.frames > seen + 30)
    async with node_http(node) as get:
        metrics = await get("/metrics")
    assert 'orbridge_recording_errors_total{code="disk_full"} 1.0' in metrics
    stopped = await moderator.request("stop_recording", {})
    assert [e["code"] for e in stopped["errors"]] == ["disk_full"]
    assert "/" not in json.dumps(stopped["errors"])
    manifest = node.node.recordings.store.load(started["id"])
    assert manifest.tracks[0].segments[0].error is not None
    assert "/" not in manifest.tracks[0].segments[0].error  # library viewers read it
    await surgeon.close()
    await expert.media.close()


async def full_disk_for(path: Path) -> None:
    """`path` becomes /dev/full. A save in flight holds it for a moment (written, then
    renamed): wait for the rename, then take the name (every later save opens /dev/full)."""
    for _ in range(200):
        try:
            os.symlink("/dev/full", path)
            return
        except FileExistsError:
            await asyncio.sleep(0.01)
    raise AssertionError(f"{path} stayed in the way")


async def test_a_full_disk_is_reported_once_and_the_manifest_completes_when_it_returns(
    node: LiveNode,
) -> None:
    """The whole disk is full: the video file, the event log and the manifest fail alike.
    The room hears disk_full once (one cause), stop_recording answers complete, and the
    manifest on disk says so as soon as the disk takes it again (not "recording" for good)."""
    moderator = await node.client("or-1", Role.MODERATOR, identity="mod-li")
    started = await moderator.request("start_recording", {"consent": "verbal"})
    directory = node.node.recordings.store.directory(started["id"])
    os.symlink("/dev/full", directory / "laparoscope-dr-ma-001.webm")
    await full_disk_for(directory / "manifest.json.tmp")  # every manifest write: ENOSPC
    _, surgeon = await publish_or(node)
    error = await moderator.next_event("recording_error", wait=10)
    assert error["code"] == "disk_full"
    await asyncio.sleep(3.0)  # the manifest's periodic saves fail too
    stopped = await moderator.request("stop_recording", {})
    assert [e["code"] for e in stopped["errors"]] == ["disk_full"]
    await asyncio.sleep(0.5)
    assert moderator.pending("recording_error") == []  # once per cause, not per failure
    on_disk = json.loads((directory / "manifest.json").read_text())
    assert on_disk["state"] == "recording"  # the disk is still full
    os.unlink(directory / "manifest.json.tmp")  # space again
    manifest = directory / "manifest.json"
    await until(lambda: json.loads(manifest.read_text())["state"] == "complete")
    await surgeon.close()


async def test_unwritable_recordings_directory_refuses_to_start(
    start_node: StartNode, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    node = await start_node(recordings_dir=blocker)
    moderator = await node.client("or-1", Role.MODERATOR, identity="mod-li")
    with pytest.raises(ProtocolError) as err:
        await moderator.request("start_recording", {"consent": "written"})
    assert err.value.code == "recording_failed"
    assert str(tmp_path) not in str(err.value) and "not-a-directory" not in str(err.value)
    assert node.node.recordings.recording("or-1") is None
    assert await moderator.request("snapshot")  # the connection is fine


def node_http(node: LiveNode) -> Any:
    import contextlib

    import aiohttp

    @contextlib.asynccontextmanager
    async def session() -> Any:
        async with aiohttp.ClientSession() as http:

            async def get(path: str) -> str:
                async with http.get(node.url + path) as response:
                    return await response.text()

            yield get

    return session()


def test_segment_mapping_follows_sync_points() -> None:
    points = [[0.0, 1000.0], [10.0, 11010.0], [20.0, 21020.0]]
    segment = Segment(
        "a.webm",
        "TR_1",
        "VP8",
        90000,
        first_arrival_ms=1000,
        first_ts=9000,
        duration=30.0,
        sync_points=points,
    )
    assert segment.wall_ms(5.0) == pytest.approx(6005)
    assert segment.wall_ms(25.0) == pytest.approx(26020)
    for wall in (1000, 6005, 15000, 26020):
        assert segment.wall_ms(segment.media_time(wall)) == pytest.approx(wall)
    assert segment.media_time_of_ts(9000 + 90000 * 3) == pytest.approx(3.0)


@pytest.mark.parametrize("lean_sender", [True, False], ids=["lean-sender", "aiortc-sender"])
async def test_an_annotation_names_its_frame_with_either_sender(
    start_node: StartNode, lean_sender: bool
) -> None:
    """Frame anchoring does not depend on the performance switch: each subscription knows its
    RTP origin, from the lean sender or read back from aiortc's own send loop."""
    node = await start_node(lean_sender=lean_sender)
    moderator = await node.client("or-1", Role.MODERATOR, identity="mod-li")
    expert = Expert(await node.client("or-1", Role.EXPERT, identity="dr-wang"))
    await expert.media.subscribe(expert.consume)
    started = await moderator.request("start_recording", {"consent": "written"})
    _, surgeon = await publish_or(node)
    await until(lambda: expert.drawn is not None, within=15)
    await moderator.request("stop_recording", {})
    await surgeon.close()
    await expert.media.close()

    directory = node.node.recordings.store.directory(started["id"])
    [track] = Manifest.load(directory).tracks
    [drawn] = [e["annotation"] for e in read_events(directory / "events.jsonl")
               if e["type"] == "annotation"]  # fmt: skip
    assert expert.drawn is not None and drawn["id"] == expert.drawn["id"]
    assert isinstance(drawn["frame"]["source_ts"], int)
    [segment] = track.segments
    media_time = segment.media_time_of_ts(drawn["frame"]["source_ts"])
    assert media_time is not None
    code = frame_at(directory / segment.file, media_time)
    assert code is not None and code[0] == expert.drawn["capture_ms"]
