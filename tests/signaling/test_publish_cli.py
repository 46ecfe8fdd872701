"""`orbridge publish` against a real in-process server, watched by a real expert client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import av
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from orbridge.media import tap
from orbridge.media.client import MediaClient
from orbridge.media.sim.clip import write_clip
from orbridge.media.sim.timecode import read_timestamp
from orbridge.signaling.cli.main import build_parser, main
from orbridge.signaling.cli.publish import parse_bitrate, parse_size, run_publish
from tests.conftest import LiveNode
from tests.support import SECRET


def decoding(pc: RTCPeerConnection) -> None:
    tap.set_receive_mode(pc, "decode")  # the expert wants pictures; the server never decodes


class Watcher:
    """An expert's subscriber: reads the timestamp code of every frame it decodes."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, tuple[int, int] | None]] = []
        self.sizes: set[tuple[int, int]] = set()
        self.sources: list[str] = []

    async def consume(self, info: dict[str, Any], track: MediaStreamTrack) -> None:
        self.sources.append(info.get("source", "?"))
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self.sizes.add((frame.width, frame.height))
                    self.stamps.append((time.time() * 1000, read_timestamp(frame.to_ndarray())))


def publish_args(*argv: str) -> Any:
    return build_parser().parse_args(["publish", *argv])


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def until(predicate: Any, within: float) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - counters have no event
            await asyncio.sleep(0.05)


async def test_publish_synthetic_reaches_an_expert(node: LiveNode, capsys: Any) -> None:
    expert_room = await node.client("or-1", "expert", identity="dr-wang")
    expert = MediaClient(expert_room, on_pc=decoding)
    watcher = Watcher()
    await expert.subscribe(watcher.consume)

    token = node.token("or-1", "surgeon", identity="dr-ma")
    args = publish_args(
        "--url", node.url, "--token", token, "--synthetic", "--duration", "3", "--audio"
    )
    began = time.monotonic()
    async with asyncio.timeout(30):
        code = await run_publish(args)
    assert code == 0
    assert time.monotonic() - began < 15
    started, summary = json_lines(capsys.readouterr().out)
    assert started["event"] == "publishing"
    assert (started["room"], started["identity"], started["codec"]) == ("or-1", "dr-ma", "VP8")
    assert sorted(t["source"] for t in started["tracks"]) == ["laparoscope", "microphone"]
    assert summary["event"] == "summary" and summary["exit"] == 0
    assert summary["frames_sent"] >= 80 and summary["keyframes"] >= 1
    assert 27 <= summary["fps"] <= 33
    assert 1_500_000 < summary["bitrate"] < 4_000_000  # 2.5M CBR (plus the first keyframe)

    await until(lambda: len(watcher.stamps) >= 40, 5)
    await expert.close()
    assert watcher.sizes == {(1280, 720)}
    assert sorted(watcher.sources) == ["laparoscope", "microphone"]
    readable = [(arrived, stamp) for arrived, stamp in watcher.stamps if stamp is not None]
    assert len(readable) >= 0.95 * len(watcher.stamps)
    numbers = [stamp[1] for _, stamp in readable]
    assert numbers == sorted(numbers)
    latency = sorted(arrived - stamp[0] for arrived, stamp in readable)
    assert latency[0] >= 0 and latency[len(latency) // 2] < 400, latency


async def test_publish_mints_its_own_surgeon_token_and_streams_a_file(
    node: LiveNode, capsys: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("ORBRIDGE_SECRET", SECRET)
    clip = write_clip(tmp_path / "clip.webm", seconds=1.0, width=320, height=180)
    watcher = Watcher()
    expert_room = await node.client("or-2", "expert")
    expert = MediaClient(expert_room, on_pc=decoding)
    await expert.subscribe(watcher.consume)

    args = publish_args(
        "--url",
        node.url,
        "--room",
        "or-2",
        "--identity",
        "scope-1",
        "--file",
        str(clip),
        "--duration",
        "2",
    )
    async with asyncio.timeout(30):
        assert await run_publish(args) == 0
    started, summary = json_lines(capsys.readouterr().out)
    assert started["identity"] == "scope-1" and started["size"] == [320, 180]
    joined = await expert_room.next_event("participant_joined")
    assert (joined["participant"]["identity"], joined["participant"]["role"]) == (
        "scope-1",
        "surgeon",
    )
    assert summary["loops"] >= 1 and summary["frames_sent"] >= 50
    await until(lambda: len(watcher.stamps) >= 30, 5)
    await expert.close()
    assert all(stamp is not None for _, stamp in watcher.stamps)


async def test_publish_exits_nonzero_when_removed(node: LiveNode, capsys: Any) -> None:
    moderator = await node.client("or-3", "moderator", identity="boss")
    token = node.token("or-3", "surgeon", identity="dr-ma")
    args = publish_args("--url", node.url, "--token", token, "--synthetic", "--size", "320x180")
    task = asyncio.ensure_future(run_publish(args))
    try:
        await moderator.next_event("track_published", wait=15)
        out: list[str] = []
        # remove it once media flows (the "publishing" line), not during ICE set-up
        await until(
            lambda: out.append(capsys.readouterr().out) or '"publishing"' in "".join(out), 10
        )
        await asyncio.sleep(0.3)
        await moderator.request("remove_participant", {"identity": "dr-ma", "reason": "test"})
        async with asyncio.timeout(10):
            code = await task
    finally:
        task.cancel()
    assert code == 1
    captured = capsys.readouterr()
    assert "removed from the room (removed) by boss: test" in captured.err
    summary = json_lines(captured.out)[-1]
    assert summary["exit"] == 1 and summary["frames_sent"] > 0


async def test_publish_needs_a_token_or_a_secret(capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("ORBRIDGE_SECRET", raising=False)
    args = publish_args("--url", "http://127.0.0.1:9", "--room", "or-1", "--synthetic")
    assert await run_publish(args) == 2
    assert "--token" in capsys.readouterr().err


def test_cli_dispatches_publish(capsys: Any) -> None:
    # Nothing listens on port 9: a clean failure with exit 1, through `orbridge publish`.
    code = main(
        [
            "publish",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "x",
            "--synthetic",
            "--size",
            "320x180",
            "--duration",
            "1",
        ]
    )
    assert code == 1
    assert "cannot join" in capsys.readouterr().err


def test_argument_parsing() -> None:
    assert parse_size("1280x720") == (1280, 720)
    assert parse_bitrate("2500k") == 2_500_000 and parse_bitrate("1.5M") == 1_500_000
    args = publish_args("--url", "http://x", "--token", "t", "--synthetic")
    assert (args.size, args.fps, args.bitrate, args.codec, args.source, args.duration) == (
        (1280, 720),
        30.0,
        2_500_000,
        None,
        "laparoscope",
        0.0,
    )
    for bad in (["--size", "1281x720"], ["--bitrate", "lots"], ["--codec", "VP9"]):
        with pytest.raises(SystemExit):
            publish_args("--url", "http://x", "--token", "t", "--synthetic", *bad)
    with pytest.raises(SystemExit):  # --synthetic or --file, not both
        publish_args("--url", "http://x", "--token", "t", "--synthetic", "--file", "a.webm")


async def test_publish_h264_to_an_h264_server(start_node: Any, capsys: Any) -> None:
    node = await start_node(video_codec="H264")
    expert_room = await node.client("or-4", "expert")
    expert = MediaClient(expert_room, on_pc=decoding)
    watcher = Watcher()
    await expert.subscribe(watcher.consume)
    token = node.token("or-4", "surgeon")
    args = publish_args(
        "--url",
        node.url,
        "--token",
        token,
        "--synthetic",
        "--codec",
        "h264",
        "--size",
        "640x360",
        "--bitrate",
        "1M",
        "--duration",
        "2",
    )
    async with asyncio.timeout(30):
        assert await run_publish(args) == 0
    started, summary = json_lines(capsys.readouterr().out)
    assert started["codec"] == "H264" and started["tracks"][0]["codec"] == "video/H264"
    assert summary["frames_sent"] >= 50
    await until(lambda: len(watcher.stamps) >= 30, 5)
    await expert.close()
    assert watcher.sizes == {(640, 360)}
    assert all(stamp is not None for _, stamp in watcher.stamps)
