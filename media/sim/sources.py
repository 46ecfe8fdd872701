"""Publisher-side media sources that send **pre-encoded packets** (``av.Packet``).

aiortc's ``RTCRtpSender`` packs anything that is not an ``av.Frame`` with the codec's
``pack()`` and opens no encoder of its own, so a track that returns packets controls the
bitrate exactly and exercises the server's real forwarding path (the browser sends encoded
frames too). Packets need ``pts`` and ``time_base``; we use 1/90000, the video RTP clock.

* :class:`VideoEncoder`: libvpx (VP8, realtime) or libx264 (ultrafast, zerolatency,
  constrained baseline, Annex-B with SPS/PPS before every IDR) through PyAV, with keyframes
  every GOP and on demand.
* :class:`SyntheticVideoTrack`: renders :class:`media.sim.scene.SyntheticScene` frames (with
  the timestamp code), encodes them in a worker thread and paces them at the frame rate.
* :func:`wire_keyframe_requests`: a PLI/FIR arriving at a sender only sets a flag for aiortc's
  own encoder, which packets bypass; this makes it force our next keyframe instead.
* :class:`FileVideoTrack`: streams a VP8 or H.264 file without re-encoding, looping, paced by
  its timestamps (rebased on every loop so time keeps increasing).
* :class:`ToneAudioTrack`: a quiet beeping tone (aiortc encodes it to Opus itself).
* :func:`write_clip`: writes a synthetic clip (WebM/VP8 or MP4/MKV H.264) to stream later.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fractions
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import av
import cv2
import numpy as np
from aiortc import RTCRtpSender
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from av.video.frame import PictureType

from orbridge.media import aiortc_compat
from orbridge.media.bitstream import h264_is_keyframe, vp8_is_keyframe
from orbridge.media.sim.scene import SyntheticScene

__all__ = [
    "VIDEO_TIME_BASE",
    "FileVideoTrack",
    "SourceStats",
    "SyntheticVideoTrack",
    "ToneAudioTrack",
    "VideoEncoder",
    "wire_keyframe_requests",
    "write_clip",
]

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
Codec = Literal["VP8", "H264"]
MAX_LAG = 0.2
"""Seconds a synthetic track may lag its clock before it skips frames to catch up."""


@dataclass
class SourceStats:
    """What a packet source produced (read on the event loop; written there too)."""

    frames: int = 0
    keyframes: int = 0
    keyframes_requested: int = 0
    bytes: int = 0
    frames_skipped: int = 0
    """Frames not produced because the source fell more than ``MAX_LAG`` behind its clock."""
    encode_seconds: float = 0.0
    """Render + colour conversion + encode time, summed (synthetic track only)."""
    loops: int = 0
    """Times a file restarted from its beginning."""
    started_at: float | None = None
    last_at: float | None = None
    keyframe_log: list[int] = field(default_factory=list, repr=False)
    """Frame numbers of the last keyframes (at most 100)."""

    def summary(self) -> dict[str, Any]:
        """Counters plus achieved frame rate and bitrate since the first frame."""
        span = (self.last_at or 0.0) - (self.started_at or 0.0)
        # n frames span n-1 intervals; the last frame's interval is the nominal period.
        seconds = span * self.frames / (self.frames - 1) if self.frames > 1 else 0.0
        data = asdict(self)
        data.pop("keyframe_log")
        data.pop("started_at")
        data.pop("last_at")
        data["seconds"] = round(seconds, 3)
        data["fps"] = round(self.frames / seconds, 2) if seconds else 0.0
        data["bitrate"] = round(self.bytes * 8 / seconds) if seconds else 0
        data["encode_ms_per_frame"] = (
            round(1000 * self.encode_seconds / self.frames, 2) if self.frames else 0.0
        )
        data["encode_seconds"] = round(self.encode_seconds, 3)
        return data

    def count(self, packet: av.Packet, frame_no: int) -> None:
        now = time.monotonic()
        if self.started_at is None:
            self.started_at = now
        self.last_at = now
        self.frames += 1
        self.bytes += packet.size
        if packet.is_keyframe:
            self.keyframes += 1
            self.keyframe_log.append(frame_no)
            del self.keyframe_log[:-100]


# --- encoder -------------------------------------------------------------------------------


class VideoEncoder:
    """One PyAV encoder context producing one packet per frame (no lookahead, no B-frames).

    ``bitrate`` is a CBR target in bits per second; keyframes come every ``gop`` frames and
    whenever :meth:`encode` is called with ``keyframe=True``. Not thread-safe: one caller.
    """

    def __init__(
        self,
        codec: Codec,
        width: int,
        height: int,
        fps: float,
        bitrate: int,
        gop: int,
        threads: int = 1,
    ) -> None:
        self.codec = codec
        self.fps = fps
        self.gop = max(1, gop)
        rate = fractions.Fraction(fps).limit_denominator(1001)
        if codec == "VP8":
            ctx = av.CodecContext.create("libvpx", "w")
            ctx.options = {
                "deadline": "realtime",
                "cpu-used": "8",  # fastest VP8 realtime speed that still looks fine
                "lag-in-frames": "0",  # one packet out per frame in
                "error-resilient": "1",  # decodable after losses on the county uplink
                # CBR with a 1 s buffer: bitrate is what the link test asks for.
                "minrate": str(bitrate),
                "maxrate": str(bitrate),
                "bufsize": str(bitrate),
                "undershoot-pct": "95",
                "overshoot-pct": "15",
                "static-thresh": "0",
                "auto-alt-ref": "0",
            }
            ctx.qmin, ctx.qmax = 4, 56
            self._is_keyframe: Callable[[bytes], bool] = vp8_is_keyframe
        elif codec == "H264":
            ctx = av.CodecContext.create("libx264", "w")
            ctx.profile = "Constrained Baseline"
            kbps = max(1, bitrate // 1000)
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",  # no lookahead, no B-frames: one AU per frame
                "level": "31",  # what aiortc and browsers offer (42e01f / 42001f)
                "forced-idr": "1",  # a forced keyframe must be an IDR a subscriber can join on
                "x264-params": (
                    f"keyint={self.gop}:min-keyint={self.gop}:scenecut=0:"
                    f"nal-hrd=none:vbv-maxrate={kbps}:vbv-bufsize={kbps}:repeat-headers=1"
                ),
            }
            self._is_keyframe = h264_is_keyframe
        else:
            raise ValueError(f"unsupported codec {codec!r} (VP8 or H264)")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.bit_rate = bitrate
        ctx.time_base = 1 / rate
        ctx.framerate = rate
        ctx.gop_size = self.gop
        ctx.thread_count = threads
        self._ctx = ctx
        self._next_key = 0  # frame index of the next scheduled (GOP) keyframe

    def encode(self, frame: av.VideoFrame, index: int, keyframe: bool = False) -> av.Packet | None:
        """Encode frame number ``index``; the packet has pts/time_base in 90 kHz units."""
        if keyframe or index >= self._next_key:
            frame.pict_type = PictureType.I
            self._next_key = index + self.gop
        else:
            frame.pict_type = PictureType.NONE
        frame.pts = index
        frame.time_base = self._ctx.time_base
        packets = self._ctx.encode(frame)
        if not packets:
            return None
        data = b"".join(bytes(p) for p in packets)
        packet = av.Packet(data)
        packet.pts = packet.dts = round(index * VIDEO_CLOCK / self.fps)
        packet.time_base = VIDEO_TIME_BASE
        packet.is_keyframe = self._is_keyframe(data)
        return packet


# --- synthetic track -----------------------------------------------------------------------


class SyntheticVideoTrack(MediaStreamTrack):
    """Synthetic laparoscope video as pre-encoded VP8/H.264 packets at a steady frame rate.

    Each ``recv()`` waits for the frame's due time, then renders, converts and encodes it in
    a single worker thread (one frame in flight), so the event loop never blocks on libvpx
    or libx264. If the machine cannot keep up, frames are skipped to stay on the wall clock
    (``stats.frames_skipped``) rather than drifting behind. The frame's capture wall-clock
    time (ms) and number are drawn into the picture (:func:`media.sim.scene.read_timestamp`).
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


# --- clips ---------------------------------------------------------------------------------


def write_clip(
    path: str | Path,
    seconds: float = 4.0,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    codec: Codec = "VP8",
    bitrate: int = 1_000_000,
    gop_seconds: float = 1.0,
    start_ms: int = 0,
) -> Path:
    """Write a synthetic clip for ``FileVideoTrack`` / ``orbridge publish --file``.

    VP8 goes into WebM (``.webm``/``.mkv``), H.264 into MP4 (``.mp4``) or Matroska. The
    timestamp code carries ``start_ms + frame time`` (the clip is not live: this is not a
    capture time) and the frame number.
    """
    path = Path(path)
    scene = SyntheticScene(width, height)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx" if codec == "VP8" else "libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bitrate
        stream.gop_size = max(1, round(gop_seconds * fps))
        if codec == "VP8":
            stream.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        else:
            stream.codec_context.profile = "Constrained Baseline"
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "level": "31"}
        for index in range(round(seconds * fps)):
            image = scene.render(index / fps, start_ms + round(index * 1000 / fps), index)
            frame = av.VideoFrame.from_ndarray(
                cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p"
            )
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
