"""Fixtures and helpers for the recorder tests: real codecs, real files, PyAV decoding."""

from __future__ import annotations

import fractions
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import pytest

from orbridge.media.sim.encoder import VideoEncoder
from orbridge.media.sim.scene import SyntheticScene
from orbridge.media.sim.timecode import read_timestamp
from tests.media.conftest import media_env, rig  # noqa: F401  (fixtures reused as they are)

TB90K = fractions.Fraction(1, 90000)


@dataclass
class Decoded:
    """What a full decode of a recorded file gave."""

    frames: int = 0
    times: list[float] = field(default_factory=list)
    """Presentation time (s) of each frame."""
    codes: list[tuple[int, int] | None] = field(default_factory=list)
    """Timestamp code (capture ms, frame number) read from each frame, when asked."""
    duration: float | None = None
    """Container duration (s) as FFmpeg reads it."""
    size: tuple[int, int] | None = None


def decode_file(path: str | Path, read_codes: bool = False) -> Decoded:
    """Decode every frame of the first video stream; any decode error raises."""
    result = Decoded()
    with av.open(str(path)) as container:
        if container.duration is not None:
            result.duration = container.duration / 1_000_000
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            for frame in packet.decode():  # raises av.error.* on corrupt data
                result.frames += 1
                result.times.append(float(frame.time or 0.0))
                result.size = (frame.width, frame.height)
                if read_codes:
                    result.codes.append(read_timestamp(frame.to_ndarray(format="yuv420p")))
    return result


def encode_packets(
    codec: str = "VP8",
    count: int = 90,
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    gop: int = 30,
    start_ms: int = 1_000_000,
    bitrate: int = 600_000,
) -> list[av.Packet]:
    """Real encoded packets (90 kHz pts) whose pictures carry ``start_ms + i/fps`` codes."""
    encoder = VideoEncoder(codec, width, height, fps, bitrate, gop=gop)  # type: ignore[arg-type]
    scene = SyntheticScene(width, height)
    packets = []
    for index in range(count):
        image = scene.render(index / fps, start_ms + round(index * 1000 / fps), index)
        frame = av.VideoFrame.from_ndarray(
            cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p"
        )
        packet = encoder.encode(frame, index)
        if packet is not None:
            packets.append(packet)
    return packets


@pytest.fixture(scope="session")
def vp8_packets() -> list[av.Packet]:
    return encode_packets("VP8", count=120, gop=10)
