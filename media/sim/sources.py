"""Publisher-side media sources that send **pre-encoded packets** (``av.Packet``).

aiortc's ``RTCRtpSender`` packs anything that is not an ``av.Frame`` with the codec's
``pack()`` and opens no encoder of its own, so a track that returns packets controls the
bitrate exactly and exercises the server's real forwarding path (the browser sends encoded
frames too). The packets come from :mod:`orbridge.media.sim.encoder` (``VideoEncoder``, 90 kHz
timestamps) or straight from a file; :mod:`orbridge.media.sim.clip` writes such files.

* :class:`SyntheticVideoTrack`: renders :class:`media.sim.scene.SyntheticScene` frames (with
  the timestamp code), encodes them in a worker thread and paces them at the frame rate.
* :func:`wire_keyframe_requests`: a PLI/FIR arriving at a sender only sets a flag for aiortc's
  own encoder, which packets bypass; this makes it force our next keyframe instead.
* :class:`FileVideoTrack`: streams a VP8 or H.264 file without re-encoding, looping, paced by
  its timestamps (rebased on every loop so time keeps increasing).
* :class:`ToneAudioTrack`: a quiet beeping tone (aiortc encodes it to Opus itself).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from aiortc import RTCRtpSender
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack

from orbridge.media import aiortc_compat
from orbridge.media.sim.encoder import (
    VIDEO_CLOCK,
    VIDEO_TIME_BASE,
    Codec,
    SourceStats,
    VideoEncoder,
)
from orbridge.media.sim.scene import SyntheticScene

__all__ = [
    "FileVideoTrack",
    "SyntheticVideoTrack",
    "ToneAudioTrack",
    "wire_keyframe_requests",
]

logger = logging.getLogger(__name__)

MAX_LAG = 0.2
"""Seconds a synthetic track may lag its clock before it skips frames to catch up."""


# --- synthetic track -----------------------------------------------------------------------


class SyntheticVideoTrack(MediaStreamTrack):
    """Synthetic laparoscope video as pre-encoded VP8/H.264 packets at a steady frame rate.

    Each ``recv()`` waits for the frame's due time, then renders, converts and encodes it in
    a single worker thread (one frame in flight), so the event loop never blocks on libvpx
    or libx264. If the machine cannot keep up, frames are skipped to stay on the wall clock
    (``stats.frames_skipped``) rather than drifting behind. The frame's capture wall-clock
    time (ms) and number are drawn into the picture (:func:`media.sim.timecode.read_timestamp`).
    """

    kind = "video"

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        bitrate: int = 2_500_000,
        codec: Codec = "VP8",
        *,
        gop_seconds: float = 4.0,
        out_of_body_every: float | None = None,
        out_of_body_seconds: float = 3.0,
        threads: int = 1,
        clock: Callable[[], float] = time.time,
        scene: SyntheticScene | None = None,
    ) -> None:
        super().__init__()
        if fps <= 0 or bitrate <= 0:
            raise ValueError("fps and bitrate must be positive")
        self.width, self.height, self.fps, self.codec = width, height, fps, codec
        self.scene = scene or SyntheticScene(
            width,
            height,
            out_of_body_every=out_of_body_every,
            out_of_body_seconds=out_of_body_seconds,
        )
        self.encoder = VideoEncoder(
            codec,
            width,
            height,
            fps,
            bitrate,
            gop=max(1, round(gop_seconds * fps)),
            threads=threads,
        )
        self.stats = SourceStats()
        self._clock = clock
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "orbridge-synthetic")
        self._index = 0
        self._start: float | None = None
        self._keyframe_wanted = False

    def request_keyframe(self) -> None:
        """Make the next frame a keyframe (a subscriber joined or lost packets)."""
        self.stats.keyframes_requested += 1
        self._keyframe_wanted = True

    def _produce(self, index: int, keyframe: bool) -> tuple[av.Packet | None, float]:
        began = time.perf_counter()
        wall_ms = int(self._clock() * 1000)  # capture time, as a camera would stamp it
        image = self.scene.render(index / self.fps, wall_ms, index)
        i420 = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        packet = self.encoder.encode(frame, index, keyframe)
        return packet, time.perf_counter() - began

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        while True:
            now = time.monotonic()
            if self._start is None:
                self._start = now
            due = self._start + self._index / self.fps
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > max(MAX_LAG, 3 / self.fps):
                # Too far behind (slow machine): jump to the present, keeping pts honest.
                # A short lag (encoder start-up) is caught up by sending without waiting.
                current = int((now - self._start) * self.fps)
                logger.warning(
                    "synthetic video %.0f ms behind at frame %d: skipping %d frames",
                    1000 * (now - due),
                    self._index,
                    current - self._index,
                )
                self.stats.frames_skipped += current - self._index
                self._index = current
            index = self._index
            self._index += 1
            keyframe, self._keyframe_wanted = self._keyframe_wanted, False
            try:
                packet, spent = await loop.run_in_executor(
                    self._executor, self._produce, index, keyframe
                )
            except RuntimeError as exc:  # executor shut down by stop()
                raise MediaStreamError from exc
            if self.readyState != "live":
                raise MediaStreamError
            self.stats.encode_seconds += spent
            if packet is not None:
                self.stats.count(packet, index)
                return packet
            self._keyframe_wanted |= keyframe  # nothing came out: keep the request

    def stop(self) -> None:
        super().stop()
        self._executor.shutdown(wait=False, cancel_futures=True)


def wire_keyframe_requests(sender: RTCRtpSender, track: Any) -> None:
    """Make a PLI/FIR received on ``sender`` call ``track.request_keyframe()``.

    aiortc routes PLI/FIR to ``sender._send_keyframe()``, which only flags its own encoder;
    a packet track bypasses that encoder, so the request would be lost
    (``aiortc_compat.on_keyframe_request``).
    """
    aiortc_compat.on_keyframe_request(sender, track.request_keyframe)


# --- file track ----------------------------------------------------------------------------


class FileVideoTrack(MediaStreamTrack):
    """Streams the video of a VP8 (WebM/IVF/MKV) or H.264 (MP4/MKV/Annex-B) file unchanged.

    Packets are paced by their decode timestamps and re-stamped in 90 kHz; at the end the
    file starts again (``loop=True``) with timestamps continuing, so a receiver sees one
    endless stream. H.264 in MP4/MKV (length-prefixed NAL units) is converted to Annex-B with
    the ``h264_mp4toannexb`` bitstream filter, which also puts SPS/PPS before each IDR.
    The file should have no B-frames (WebRTC receivers expect decode order = display order)
    and a short GOP: a file cannot produce a keyframe on request, so requests are only
    counted and a new subscriber waits for the file's next keyframe.
    """

    kind = "video"

    def __init__(self, path: str | Path, loop: bool = True) -> None:
        super().__init__()
        self.path = str(path)
        self.loop = loop
        self.stats = SourceStats()
        self._container: Any = None
        self._stream: Any = None
        self._bsf: Any = None
        # stop() (event loop) must not close the container under a demux (worker thread).
        self._lock = threading.Lock()
        self._open()
        stream = self._stream
        name = stream.codec_context.name
        if name not in ("vp8", "h264"):
            self._container.close()
            raise ValueError(f"{self.path}: video is {name}; only VP8 or H.264 can be streamed")
        self.codec: Codec = "VP8" if name == "vp8" else "H264"
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate or 30
        self._frame_seconds = 1 / float(rate)
        self._offset = 0.0  # seconds added to this loop's timestamps
        self._first: float | None = None  # first timestamp of the file, seconds
        self._last = 0.0  # latest rebased timestamp of the current loop
        self._count = 0
        self._start: float | None = None
        self._pending: list[tuple[bytes, float, bool]] = []

    def _open(self) -> None:
        self._container = av.open(self.path)
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"{self.path}: no video stream")
        self._stream = self._container.streams.video[0]
        self._packets = self._container.demux(self._stream)
        extradata = self._stream.codec_context.extradata or b""
        # avcC extradata (first byte 1) means length-prefixed NAL units.
        if self._stream.codec_context.name == "h264" and extradata[:1] == b"\x01":
            from av.bitstream import BitStreamFilterContext

            self._bsf = BitStreamFilterContext("h264_mp4toannexb", self._stream)
        else:
            self._bsf = None

    def request_keyframe(self) -> None:
        self.stats.keyframes_requested += 1  # a file cannot make one; see the class doc

    def _read(self) -> list[tuple[bytes, float, bool]]:
        """Next packets as (data, seconds from the file start + loop offset, keyframe)."""
        with self._lock:
            if self._container is None:  # stopped
                return []
            return self._read_locked()

    def _read_locked(self) -> list[tuple[bytes, float, bool]]:
        while True:
            packet = next(self._packets, None)
            if packet is None:
                if not self.loop or self._first is None:
                    return []
                # Restart: the new loop begins one frame after the last frame shown.
                self._offset = self._last + self._frame_seconds
                self._container.close()
                self._open()
                self.stats.loops += 1
                continue
            if packet.size == 0:
                continue
            out = self._bsf.filter(packet) if self._bsf is not None else [packet]
            result = []
            for item in out:
                stamp = item.dts if item.dts is not None else item.pts
                if stamp is None or item.time_base is None:
                    seconds = self._count * self._frame_seconds
                else:
                    seconds = float(stamp * item.time_base)
                if self._first is None:
                    self._first = seconds
                rebased = seconds - self._first + self._offset
                self._last = max(self._last, rebased)
                self._count += 1
                result.append((bytes(item), rebased, bool(item.is_keyframe)))
            if result:
                return result

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        pending = self._pending
        if not pending:
            pending = await asyncio.to_thread(self._read)  # file I/O off the event loop
            if not pending:
                self.stop()
                raise MediaStreamError
        data, seconds, keyframe = pending.pop(0)
        self._pending = pending
        now = time.monotonic()
        if self._start is None:
            self._start = now - seconds
        due = self._start + seconds
        if due > now:
            await asyncio.sleep(due - now)
        packet = av.Packet(data)
        packet.pts = packet.dts = round(seconds * VIDEO_CLOCK)
        packet.time_base = VIDEO_TIME_BASE
        packet.is_keyframe = keyframe
        self.stats.count(packet, self._count)
        return packet

    def stop(self) -> None:
        super().stop()
        with self._lock:  # at most one packet's demux to wait for
            if self._container is not None:
                self._container.close()
                self._container = None


# --- audio ---------------------------------------------------------------------------------


class ToneAudioTrack(AudioStreamTrack):
    """A quiet 440 Hz beep (0.2 s every second) as 20 ms mono frames at 48 kHz.

    aiortc's Opus encoder encodes it on the publisher: audio is tiny, and this keeps the
    synthetic microphone audible (a silent track would not show a broken audio path).
    """

    def __init__(self, frequency: float = 440.0, level: float = 0.1) -> None:
        super().__init__()
        self.frequency = frequency
        self.level = level
        self._samples = 0

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()  # silence with pts/time_base, paced by aiortc
        count = frame.samples
        t = (self._samples + np.arange(count)) / frame.sample_rate
        gate = (t % 1.0) < 0.2
        wave = self.level * np.sin(2 * math.pi * self.frequency * t) * gate
        data = (wave * 32767).astype(np.int16).reshape(1, -1)
        tone = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        tone.sample_rate = frame.sample_rate
        tone.pts, tone.time_base = frame.pts, frame.time_base
        self._samples += count
        return tone
