"""The synthetic laparoscope: picture, timestamp code through real codecs, packet tracks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from orbridge.media.codecs import negotiated_codec, prefer_codec
from orbridge.media.keyframes import media_ssrc_from_sdp
from orbridge.media.sim.clip import write_clip
from orbridge.media.sim.encoder import VIDEO_TIME_BASE, VideoEncoder
from orbridge.media.sim.scene import BANNER_RECT_720P, SyntheticScene, banner_rect, scope_circle
from orbridge.media.sim.sources import FileVideoTrack, SyntheticVideoTrack, wire_keyframe_requests
from orbridge.media.sim.timecode import (
    CODE_RECT_720P,
    FRAME_MODULO,
    code_rect,
    encode_bits,
    read_timestamp,
)
from orbridge.media.tap import set_receive_mode

BASE_MS = 1_795_300_000_000  # 2026-11


def i420(image: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), "yuv420p")


def encode_decode(
    codec: str, width: int, height: int, bitrate: int, count: int = 45, prescale: int = 1
) -> list[tuple[int, av.VideoFrame]]:
    """Render `count` frames (optionally downscaled before encoding), encode, decode."""
    scene = SyntheticScene(width * prescale, height * prescale)
    encoder = VideoEncoder(codec, width, height, 30, bitrate, gop=30)  # type: ignore[arg-type]
    decoder = av.CodecContext.create("libvpx" if codec == "VP8" else "h264", "r")
    decoded: list[tuple[int, av.VideoFrame]] = []
    for n in range(count):
        image = scene.render(n / 30, BASE_MS + n * 33, n)
        if prescale != 1:
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        packet = encoder.encode(i420(image), n)
        assert packet is not None
        assert packet.time_base == VIDEO_TIME_BASE and packet.pts == n * 3000
        frames = decoder.decode(packet)
        assert len(frames) == 1, "one packet per frame, no encoder lookahead"
        decoded.append((n, frames[0]))
    return decoded


# --- the picture ---------------------------------------------------------------------------


def test_layout_constants() -> None:
    assert BANNER_RECT_720P == (16, 16, 256, 115)
    assert CODE_RECT_720P == (14, 466, 240, 240)
    for width, height in ((1280, 720), (640, 360), (1920, 1080)):
        cx, cy, r = scope_circle(width, height)
        assert r == pytest.approx(0.46 * height)
        for x, y, w, h in (banner_rect(width, height), code_rect(width, height)):
            # every corner of both rectangles lies outside the scope circle
            for px, py in ((x, y), (x + w, y), (x, y + h), (x + w, y + h)):
                assert math.hypot(px - cx, py - cy) > r


def test_scope_mask_tissue_and_banner() -> None:
    scene = SyntheticScene(1280, 720)
    image = scene.render(2.0, BASE_MS, 60).copy()
    cx, cy, r = scope_circle(1280, 720)
    yy, xx = np.mgrid[0:720, 0:1280]
    distance = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy)
    outside = distance > r + 2
    for x, y, w, h in (BANNER_RECT_720P, CODE_RECT_720P):
        outside[y : y + h, x : x + w] = False
    assert image[outside].max() == 0, "black outside the scope circle, banner and code"

    inside = image[distance < 0.8 * r].astype(float)
    blue, green, red = inside.mean(axis=0)
    assert red > green + 60 and red > blue + 60, "reddish tissue"
    assert inside.std(axis=0).min() > 10, "textured, not flat"
    # vignette: the rim is darker than the middle
    assert image[(distance > 0.9 * r) & (distance < r)].mean() < image[distance < 0.3 * r].mean()

    x, y, w, h = BANNER_RECT_720P
    banner = image[y : y + h, x : x + w]
    bright = (banner.min(axis=2) > 200).sum()
    assert bright > 0.03 * w * h, "white patient text burned into the banner rectangle"


def test_instrument_moves_and_scene_changes() -> None:
    scene = SyntheticScene(640, 360)
    a = scene.render(1.0, BASE_MS, 0).copy()
    b = scene.render(2.0, BASE_MS, 0).copy()
    grey = lambda img: (np.abs(img[:, :, 0].astype(int) - img[:, :, 2]) < 12) & (img.min(2) > 80)  # noqa: E731
    assert grey(a).sum() > 500, "a metallic (grey) instrument is visible"
    assert (grey(a) != grey(b)).sum() > 200, "and it moves"


def test_out_of_body_segment() -> None:
    assert not SyntheticScene(640, 360).is_out_of_body(12.0)  # off by default
    scene = SyntheticScene(640, 360, out_of_body_every=10, out_of_body_seconds=3)
    assert [scene.is_out_of_body(t) for t in (0, 5, 9.9, 10, 12.9, 13.1, 20.5)] == [
        False,
        False,
        False,
        True,
        True,
        False,
        True,
    ]
    cx, cy, r = scope_circle(640, 360)
    inner = (
        slice(int(cy - 0.6 * r), int(cy + 0.6 * r)),
        slice(int(cx - 0.6 * r), int(cx + 0.6 * r)),
    )
    tissue = scene.render(5.0, BASE_MS, 1)[inner].reshape(-1, 3).mean(axis=0)
    room = scene.render(11.0, BASE_MS, 2)[inner].reshape(-1, 3).mean(axis=0)
    assert room.mean() > tissue.mean() + 30, "the room is brighter"
    assert room[1] > room[2], "greenish, not red"
    assert read_timestamp(scene.render(11.0, BASE_MS, 2)) == (BASE_MS, 2)


# --- the timestamp code --------------------------------------------------------------------


def test_code_reads_back_in_every_layout() -> None:
    scene = SyntheticScene(1280, 720)
    image = scene.render(0.5, BASE_MS + 123, 4567).copy()
    expected = (BASE_MS + 123, 4567)
    assert read_timestamp(image) == expected
    assert read_timestamp(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)) == expected
    assert read_timestamp(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)) == expected
    for size in ((640, 360), (320, 180)):
        assert read_timestamp(cv2.resize(image, size, interpolation=cv2.INTER_AREA)) == expected
    # the frame counter wraps, the ms field does not
    assert read_timestamp(scene.render(0, BASE_MS, FRAME_MODULO + 5)) == (BASE_MS, 5)


def test_unreadable_code_is_rejected() -> None:
    rng = np.random.default_rng(1)
    assert read_timestamp(np.zeros((720, 1280, 3), np.uint8)) is None
    assert read_timestamp(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)) is None
    image = SyntheticScene(1280, 720).render(0.5, BASE_MS, 9).copy()
    x, y, _, h = CODE_RECT_720P
    block = h // 10
    # flip one data block: the guards still match, the CRC does not
    row, col = y + 4 * block, x + 3 * block
    image[row : row + block, col : col + block] = 255 - image[row : row + block, col : col + block]
    assert read_timestamp(image) is None
    assert encode_bits(BASE_MS, 9).shape == (10, 10)


@pytest.mark.parametrize("codec", ["VP8", "H264"])
@pytest.mark.parametrize(
    ("width", "height", "bitrate"), [(1280, 720, 1_000_000), (640, 360, 500_000)]
)
def test_code_survives_codec_and_half_downscale(
    codec: str, width: int, height: int, bitrate: int
) -> None:
    decoded = encode_decode(codec, width, height, bitrate)
    for n, frame in decoded:
        expected = (BASE_MS + n * 33, n)
        assert read_timestamp(frame.to_ndarray()) == expected  # I420 straight from the decoder
        gray = frame.to_ndarray(format="gray")
        half = cv2.resize(gray, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
        assert read_timestamp(half) == expected, f"frame {n} at half size"
        if n % 15 == 0:
            assert read_timestamp(frame.to_ndarray(format="bgr24")) == expected


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_code_survives_downscale_before_encoding(codec: str) -> None:
    # A 720p camera sent as a 360p layer at a low bitrate.
    for n, frame in encode_decode(codec, 640, 360, 400_000, count=30, prescale=2):
        assert read_timestamp(frame.to_ndarray()) == (BASE_MS + n * 33, n)


# --- packet tracks -------------------------------------------------------------------------


async def test_packet_track_keyframes_at_gop_and_on_request() -> None:
    track = SyntheticVideoTrack(320, 180, fps=30, bitrate=300_000, gop_seconds=1.0)
    try:
        packets = []
        async with asyncio.timeout(10):
            for n in range(45):
                if n == 10:
                    track.request_keyframe()
                packets.append(await track.recv())
    finally:
        track.stop()
    keyframes = [n for n, p in enumerate(packets) if p.is_keyframe]
    # 0: first frame; 10: requested; 40: one GOP (30 frames) after the requested one
    assert keyframes == [0, 10, 40]
    assert track.stats.keyframes == 3 and track.stats.keyframes_requested == 1
    assert all(p.time_base == VIDEO_TIME_BASE for p in packets)
    pts = [p.pts for p in packets]
    assert pts == sorted(pts) and pts[1] - pts[0] == 3000
    # paced at the frame rate: 45 frames take about 1.5 s
    summary = track.stats.summary()
    assert 27 <= summary["fps"] <= 33 and summary["frames_skipped"] == 0
    with pytest.raises(MediaStreamError):
        await track.recv()


async def _consume(
    track: MediaStreamTrack,
    out: list[tuple[float, tuple[int, int] | None]],
) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            frame = await track.recv()
            out.append((time.time() * 1000, read_timestamp(frame.to_ndarray())))


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_packet_track_decodes_in_aiortc_subscriber(rig, codec: str) -> None:
    """Publisher sends pre-encoded packets; a plain decoding aiortc peer shows the picture."""
    track = SyntheticVideoTrack(640, 360, fps=30, bitrate=800_000, codec=codec)  # type: ignore[arg-type]
    publisher, viewer = rig.pc(), rig.pc()
    transceiver = publisher.addTransceiver(track, direction="sendonly")
    prefer_codec(transceiver, codec)
    wire_keyframe_requests(transceiver.sender, track)
    set_receive_mode(viewer, "decode")
    received: list[tuple[float, tuple[int, int] | None]] = []
    remote: list[MediaStreamTrack] = []
    viewer.on("track", remote.append)

    def restrict_answer() -> None:
        prefer_codec(viewer.getTransceivers()[0], codec)

    await rig.negotiate(publisher, viewer, before_answer=restrict_answer)
    assert negotiated_codec(transceiver) == f"video/{codec}"
    consumer = asyncio.ensure_future(_consume(remote[0], received))
    rig.tasks.append(consumer)
    await rig.wait_connected(publisher, viewer)
    await rig.wait_until(lambda: len(received) >= 30, 10)

    stamps = [stamp for _, stamp in received]
    assert all(stamp is not None for stamp in stamps), "every decoded frame carries its code"
    numbers = [stamp[1] for stamp in stamps if stamp]
    assert numbers == sorted(numbers) and numbers[0] <= 3
    latency = [arrived - stamp[0] for arrived, stamp in received if stamp]
    assert min(latency) >= 0 and max(latency) < 500, latency

    # A PLI from the viewer reaches the packet track and produces a keyframe.
    keyframes = track.stats.keyframes
    await _send_pli(viewer)
    await rig.wait_until(lambda: track.stats.keyframes > keyframes, 3)
    assert track.stats.keyframes_requested >= 1
    count = len(received)
    await rig.wait_until(lambda: len(received) >= count + 10, 3)
    assert all(stamp is not None for _, stamp in received)
    track.stop()


async def _send_pli(viewer: RTCPeerConnection) -> None:
    transceiver = viewer.getTransceivers()[0]
    ssrc, _ = media_ssrc_from_sdp(viewer.remoteDescription.sdp, transceiver.mid)
    assert ssrc is not None
    await transceiver.receiver._send_rtcp_pli(ssrc)


@pytest.mark.parametrize(("codec", "suffix"), [("VP8", "webm"), ("H264", "mp4")])
async def test_file_track_loops_without_reencoding(tmp_path: Path, codec: str, suffix: str) -> None:
    path = write_clip(
        tmp_path / f"clip.{suffix}",
        seconds=0.5,
        width=320,
        height=180,
        codec=codec,
        gop_seconds=0.25,
        start_ms=BASE_MS,
    )  # type: ignore[arg-type]
    track = FileVideoTrack(path)
    assert (track.codec, track.width, track.height) == (codec, 320, 180)
    decoder = av.CodecContext.create("libvpx" if codec == "VP8" else "h264", "r")
    stamps, pts, keys = [], [], []
    began = time.monotonic()
    try:
        async with asyncio.timeout(10):
            for _ in range(25):  # 15 frames per loop
                packet = await track.recv()
                pts.append(packet.pts)
                keys.append(packet.is_keyframe)
                if codec == "H264":
                    assert bytes(packet)[:4] == b"\x00\x00\x00\x01", "Annex-B for RTP"
                for frame in decoder.decode(packet):
                    stamps.append(read_timestamp(frame.to_ndarray()))
    finally:
        track.stop()
    elapsed = time.monotonic() - began
    assert track.stats.loops == 1
    # WebM stores ms: 33/34 ms steps. Across the loop point too, time keeps increasing.
    assert all(abs(b - a - 3000) <= 90 for a, b in itertools.pairwise(pts)), pts
    assert keys[0] and keys[15], "each loop starts on the file's first keyframe"
    numbers = [s[1] for s in stamps if s is not None]
    assert len(numbers) == len(stamps) >= 20
    assert numbers[:17] == [*range(15), 0, 1], "the picture restarts, time does not"
    assert stamps[0] == (BASE_MS, 0)
    assert 0.6 < elapsed < 1.5, "paced by the file's timestamps"
