"""Recorder core (issue #6): real VP8/H.264 packets into real files, decoded back with PyAV."""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from orbridge.media.forwarder import TrackForwarder
from orbridge.media.sim.sources import SyntheticVideoTrack
from orbridge.recording.live.recorder import TrackRecorder
from orbridge.recording.live.writer import SegmentWriter
from tests.recording.conftest import decode_file, encode_packets

ROOT = Path(__file__).resolve().parents[2]
FPS = 30
FRAME_MS = 1000 / FPS


def check_segment(info_path: str, decoded_frames: int, packets: int, duration: float) -> None:
    """The sidecar agrees with the file: same packet count, duration, mapping present."""
    sidecar = json.loads(Path(info_path + ".json").read_text())
    assert sidecar["closed"] is True
    assert sidecar["error"] is None
    assert sidecar["packets"] == packets == decoded_frames
    assert sidecar["first_arrival_ms"] > 0
    assert sidecar["duration"] == pytest.approx(duration)


async def record_synthetic(tmp_path: Path, codec: str, seconds: float) -> TrackRecorder:
    """A real-time SyntheticVideoTrack -> TrackForwarder -> TrackRecorder."""
    track = SyntheticVideoTrack(320, 240, fps=FPS, bitrate=600_000, codec=codec, gop_seconds=1.0)  # type: ignore[arg-type]
    forwarder = TrackForwarder(track, codec=f"video/{codec}", name="synthetic")
    forwarder.start()
    recorder = TrackRecorder(forwarder, tmp_path, "room1-cam", codec)
    recorder.start()
    await asyncio.sleep(seconds)
    await recorder.stop()
    await forwarder.stop()
    track.stop()
    return recorder


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_synthetic_recording_decodes_and_maps_to_wall_clock(
    tmp_path: Path, codec: str
) -> None:
    recorder = await record_synthetic(tmp_path, codec, 3.0)
    [info] = recorder.segments
    assert info.path.endswith(".webm" if codec == "VP8" else ".mkv")
    decoded = await asyncio.to_thread(decode_file, info.path, True)

    # Every packet written decodes into a frame, every frame carries a readable code
    # (the CRC-checked code would not survive a corrupt picture).
    assert info.packets == decoded.frames
    assert decoded.frames >= 2.5 * FPS
    assert None not in decoded.codes
    numbers = [code[1] for code in decoded.codes if code]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert decoded.size == (320, 240)

    # Duration: the file's (FFmpeg's reading of its Duration) = frames at 30 fps = ours.
    assert info.duration == pytest.approx(decoded.frames / FPS, abs=0.1)
    assert decoded.duration == pytest.approx(info.duration, abs=1 / FPS)
    assert decoded.times[0] == 0.0

    # Replay sync: arrival wall clock of media time t = first_arrival_ms + 1000 t. The
    # capture time drawn into each frame must match it within one frame (arrival comes
    # after capture by the encode time only: no network here).
    assert info.first_arrival_ms is not None
    offsets = [
        info.first_arrival_ms + 1000 * t - code[0]
        for t, code in zip(decoded.times, decoded.codes, strict=True)
        if code
    ]
    assert abs(statistics.median(offsets)) <= FRAME_MS
    assert max(abs(x) for x in offsets) <= 2 * FRAME_MS, offsets
    check_segment(info.path, decoded.frames, info.packets, info.duration or 0)
    assert recorder.stats.packets_written == info.packets
    assert recorder.stats.segments == 1
    assert recorder.stats.errors == 0


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_aiortc_publisher_recording_decodes(rig, tmp_path: Path, codec: str) -> None:  # type: ignore[no-untyped-def]
    """Packets from a real aiortc publisher, through the tap and a forwarder, into a file."""
    publisher = await rig.publisher(codec=codec)
    recorder = TrackRecorder(publisher.forwarder, tmp_path, "room1-scope")
    assert recorder.codec.lower() == f"video/{codec}".lower()
    recorder.start()
    started = time.monotonic()
    await asyncio.sleep(3.0)
    await recorder.stop()
    recorded = time.monotonic() - started
    [info] = recorder.segments
    decoded = await asyncio.to_thread(decode_file, info.path)
    assert info.error is None
    assert decoded.frames == info.packets >= 2 * FPS
    assert decoded.size == (rig.width, rig.height)
    # The segment starts at a keyframe the forwarder asked for (within ~0.3 s of start)
    # and runs to the stop: the file's duration covers the recorded time.
    assert info.duration is not None
    assert recorded - 0.5 < info.duration <= recorded + 0.1
    assert decoded.duration == pytest.approx(info.duration, abs=1 / FPS)
    assert info.duration == pytest.approx(
        (info.last_arrival_ms - info.first_arrival_ms) / 1000 + 1 / FPS, abs=0.1
    )


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_kill_9_loses_less_than_two_seconds(tmp_path: Path, codec: str) -> None:
    path = tmp_path / ("kill.webm" if codec == "VP8" else "kill.mkv")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.recording.kill_child",
        str(path),
        codec,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(20):
            line = await child.stdout.readline()
        assert line.strip() == b"recording"
        await asyncio.sleep(4.0)
        killed_ms = time.time() * 1000
        child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == -signal.SIGKILL

    decoded = await asyncio.to_thread(decode_file, path, True)
    codes = [code for code in decoded.codes if code]
    assert len(codes) == decoded.frames >= 2 * FPS  # all decodable, none corrupt
    loss = (killed_ms - codes[-1][0]) / 1000
    print(f"\nkill -9 {codec}: {decoded.frames} frames decodable, last {loss:.2f} s before kill")
    assert loss < 2.0
    # The sidecar (written at the first packet) survived the kill: replay can still sync.
    sidecar = json.loads(await asyncio.to_thread(Path(str(path) + ".json").read_text))
    assert sidecar["closed"] is False
    assert abs(sidecar["first_arrival_ms"] - codes[0][0]) < 4 * FRAME_MS


async def test_a_stalled_disk_never_blocks_the_event_loop(tmp_path: Path) -> None:
    """The disk hangs (the writer thread is stuck opening a FIFO nobody reads): every write()
    still returns at once, the queue stays at its bound, the overflow is counted, and the
    stream resumes at a keyframe when the disk comes back. No timing involved: a write()
    that blocked would hang here for good."""
    packets = await asyncio.to_thread(encode_packets, "VP8", 60, 1280, 720, FPS, 30, 0, 2_500_000)
    fifo = tmp_path / "stalled.webm"
    os.mkfifo(fifo)
    writer = SegmentWriter(fifo, "VP8", queue_size=50, loop=asyncio.get_running_loop())
    assert writer.write_data(bytes(packets[0]), 0, True, 0)
    async with asyncio.timeout(10):
        while writer.qsize:  # noqa: ASYNC110 - the thread took it and hangs opening the file
            await asyncio.sleep(0.01)
    accepted = [
        writer.write_data(bytes(packets[i % 60]), i * 3000, i % 60 == 0, 0) for i in range(1, 200)
    ]
    assert accepted[:50] == [True] * 50  # at most the queue's bound is held in memory
    assert not any(accepted[50:]) and writer.stats.dropped_overflow == 149
    # the first overflow, then each later keyframe that found the queue still full
    assert writer.stats.overflow_events == 4 and writer.qsize == 50
    # The disk comes back: a thread of this process reads the FIFO. It can only run because
    # the writer thread blocks in Python's file I/O with the GIL released (FFmpeg's own I/O
    # kept the GIL and froze the whole process, the event loop and this reader too).
    drain = Drain(fifo)
    async with asyncio.timeout(10):
        while writer.qsize:  # noqa: ASYNC110 - the thread writes what it held
            await asyncio.sleep(0.01)
    # after an overflow, only a keyframe resumes the stream (a P-frame would be undecodable)
    assert not writer.write_data(bytes(packets[1]), 200 * 3000, False, 0)
    assert writer.write_data(bytes(packets[0]), 201 * 3000, True, 0)
    info = await writer.close()
    assert await asyncio.to_thread(drain.finished.wait, 10) and drain.total > 0
    assert info.error is None and info.packets == 52


async def test_a_hung_disk_never_freezes_the_process(tmp_path: Path) -> None:
    """The disk hangs (a FIFO nobody reads: opening it blocks): the writer thread blocks and
    the process's event loop keeps running. FFmpeg's own open kept the GIL there and froze the
    whole process. In a child process: a frozen interpreter cannot report its own freeze."""
    fifo = tmp_path / "hung.webm"
    os.mkfifo(fifo)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.recording.hung_disk_child",
        str(fifo),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        lines = []
        async with asyncio.timeout(60):  # encoding the clip takes a few seconds
            while len(lines) < 51:
                lines.append((await child.stdout.readline()).decode().strip())
        assert lines[:50] == [f"tick {n}" for n in range(50)]
        _, written, _, queued = lines[50].split()
        assert int(written) == 0 and int(queued) > 0  # stuck, not done
        drain = Drain(fifo)
        async with asyncio.timeout(30):
            closed = (await child.stdout.readline()).decode().split()
            assert await child.wait() == 0
        assert closed == ["closed", "300", "error", "None"]
        assert await asyncio.to_thread(drain.finished.wait, 10) and drain.total > 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


class Drain:
    """Reads a FIFO to its end in a daemon thread: a failed test must not hang the run."""

    def __init__(self, source: Path) -> None:
        self.total = 0
        self.finished = threading.Event()
        threading.Thread(target=self._run, args=(source,), daemon=True).start()

    def _run(self, source: Path) -> None:
        with open(source, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                self.total += len(chunk)
        self.finished.set()


async def test_disk_full_reports_error_without_raising(tmp_path: Path, vp8_packets) -> None:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []
    loop = asyncio.get_running_loop()
    writer = SegmentWriter("/dev/full", "VP8", loop=loop, on_error=errors.append)
    for index, packet in enumerate(vp8_packets[:30]):
        writer.write(packet, index)
        await asyncio.sleep(0)
    info = await writer.close()  # does not raise
    await asyncio.sleep(0)  # the callback was scheduled onto the loop
    assert len(errors) == 1
    assert getattr(errors[0], "errno", None) == errno.ENOSPC
    assert writer.error is errors[0]
    assert "No space left" in (info.error or "")
    assert str(tmp_path) not in (info.error or "") and "/" not in (info.error or "")
    assert writer.write(vp8_packets[0], 0) is False  # later packets are refused, counted
    assert writer.stats.dropped_after_error >= 1


async def test_unwritable_directory_reports_error(tmp_path: Path) -> None:
    """A recorder whose directory cannot be created fails its segment, not the server."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the recordings directory should be")
    track = SyntheticVideoTrack(160, 120, fps=FPS, bitrate=200_000, codec="VP8")
    forwarder = TrackForwarder(track, codec="video/VP8")
    forwarder.start()
    errors: list[BaseException] = []
    recorder = TrackRecorder(forwarder, blocker / "recordings", "r", on_error=errors.append)
    recorder.start()
    await asyncio.sleep(0.5)
    segments = await recorder.stop()
    await forwarder.stop()
    track.stop()
    assert len(errors) == 1 and isinstance(errors[0], OSError)
    assert segments[0].error and recorder.stats.errors == 1
    assert forwarder.stats.frames_in > 0  # the forwarder kept running


async def test_overflow_drops_until_keyframe_and_file_decodes(tmp_path: Path, vp8_packets) -> None:  # type: ignore[no-untyped-def]
    """A burst into a tiny queue overflows; drops resume at a keyframe, nothing corrupt."""
    writer = SegmentWriter(tmp_path / "burst.webm", "VP8", queue_size=4)
    for packet in vp8_packets:  # 120 packets (GOP 10) with no pause: far faster than disk
        writer.write(packet, 0)
    info = await writer.close()
    stats = writer.stats
    assert stats.overflow_events > 0 and stats.dropped_overflow > 0
    assert stats.packets_written + stats.dropped == len(vp8_packets)
    decoded = await asyncio.to_thread(decode_file, info.path, True)
    assert decoded.frames == stats.packets_written
    numbers = [code[1] for code in decoded.codes if code]
    assert len(numbers) == decoded.frames  # every picture intact
    for previous, current in itertools.pairwise(numbers):
        assert current == previous + 1 or current % 10 == 0  # a gap ends at a keyframe


async def test_non_increasing_timestamps_dropped(tmp_path: Path, vp8_packets) -> None:  # type: ignore[no-untyped-def]
    writer = SegmentWriter(tmp_path / "ts.webm", "VP8")
    stamps = [0, 3000, 3000, 6000, 4500, 9000]  # a repeat and a step back
    for packet, ts in zip(vp8_packets, stamps, strict=False):
        writer.write_data(bytes(packet), 1000 + ts, bool(packet.is_keyframe), 0)
    info = await writer.close()
    assert writer.stats.dropped_non_increasing == 2
    assert info.packets == 4
    assert info.duration == pytest.approx(0.1 + 1 / FPS)


async def test_new_segment_after_publisher_reconnects(tmp_path: Path) -> None:
    def publish() -> tuple[SyntheticVideoTrack, TrackForwarder]:
        track = SyntheticVideoTrack(320, 240, fps=FPS, bitrate=400_000, codec="VP8")
        forwarder = TrackForwarder(track, codec="video/VP8")
        forwarder.start()
        return track, forwarder

    track1, forwarder1 = publish()
    recorder = TrackRecorder(forwarder1, tmp_path, "room1-cam")
    recorder.start()
    await asyncio.sleep(1.5)
    await forwarder1.stop()  # the publisher dropped: the segment is finalized at once
    track1.stop()
    await asyncio.sleep(0.3)
    assert not recorder.recording
    assert recorder.segments[0].closed and recorder.segments[0].duration

    track2, forwarder2 = publish()  # reconnected: a new forwarder for the new track
    finished = await recorder.new_segment(forwarder2)
    assert finished is recorder.segments[0]
    await asyncio.sleep(1.5)
    segments = await recorder.stop()
    await forwarder2.stop()
    track2.stop()

    assert [Path(s.path).name for s in segments] == ["room1-cam-001.webm", "room1-cam-002.webm"]
    for info in segments:
        decoded = await asyncio.to_thread(decode_file, info.path)
        assert decoded.frames == info.packets >= FPS
        assert info.duration == pytest.approx(1.4, abs=0.3)
    assert segments[1].first_arrival_ms > segments[0].last_arrival_ms  # type: ignore[operator]
    stats = recorder.stats
    assert stats.segments == 2
    assert stats.packets_written == sum(s.packets for s in segments)
    assert await asyncio.to_thread(os.path.exists, segments[1].path + ".json")


async def test_h264_stream_starts_at_idr_with_sps(tmp_path: Path) -> None:
    """P-frames before the first IDR are dropped; the file opens with SPS/PPS in-band."""
    packets = await asyncio.to_thread(encode_packets, "H264", 40, 320, 240, FPS, 15)
    writer = SegmentWriter(tmp_path / "late.mkv", "H264")
    for packet in packets[5:]:  # join mid-GOP: packets 5..14 cannot be decoded yet
        writer.write(packet, 0)
    info = await writer.close()
    assert writer.stats.dropped_before_keyframe == 10
    decoded = await asyncio.to_thread(decode_file, info.path, True)
    assert decoded.frames == info.packets == 25
    assert decoded.codes[0] is not None and decoded.codes[0][1] == 15
    with av.open(info.path) as container:
        assert container.streams.video[0].codec_context.name == "h264"


async def test_opus_into_webm(tmp_path: Path) -> None:
    """Audio: Opus packets (48 kHz timestamps) muxed as they are, all decodable."""

    def opus_packets() -> list[av.Packet]:
        encoder = av.CodecContext.create("libopus", "w")
        encoder.sample_rate, encoder.layout, encoder.format = 48000, "stereo", "s16"
        packets = []
        for index in range(100):  # 2 s of 20 ms frames
            samples = (np.sin(np.arange(960 * index, 960 * (index + 1)) / 8) * 3000).astype(
                np.int16
            )
            frame = av.AudioFrame.from_ndarray(
                np.repeat(samples, 2).reshape(1, -1), format="s16", layout="stereo"
            )
            frame.sample_rate, frame.pts = 48000, 960 * index
            packets.extend(encoder.encode(frame))
        return packets

    packets = await asyncio.to_thread(opus_packets)
    writer = SegmentWriter(tmp_path / "mic.webm", "audio/opus")
    for packet in packets:
        writer.write_data(bytes(packet), int(packet.pts) + 5000, True, 0)
    info = await writer.close()

    def decode() -> tuple[int, float]:
        with av.open(info.path) as container:
            frames = list(container.decode(audio=0))
            return len(frames), (container.duration or 0) / 1_000_000

    frames, duration = await asyncio.to_thread(decode)
    assert info.error is None and frames == info.packets == len(packets)
    assert info.duration == pytest.approx(len(packets) * 0.02, abs=0.001)
    assert duration == pytest.approx(info.duration, abs=0.03)
