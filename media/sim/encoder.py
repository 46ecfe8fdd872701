"""Pre-encoded video for packet tracks: a one-packet-per-frame PyAV encoder and its counters.

aiortc's ``RTCRtpSender`` packs anything that is not an ``av.Frame`` with the codec's
``pack()`` and opens no encoder of its own, so a track that returns packets controls the
bitrate exactly. Packets need ``pts`` and ``time_base``; we use 1/90000 (``VIDEO_TIME_BASE``),
the video RTP clock.

* :class:`VideoEncoder`: libvpx (VP8, realtime) or libx264 (ultrafast, zerolatency,
  constrained baseline, Annex-B with SPS/PPS before every IDR) through PyAV, with keyframes
  every GOP and on demand.
* :class:`SourceStats`: what a packet source (:mod:`orbridge.media.sim.sources`) produced.
"""

from __future__ import annotations

import fractions
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import av
from av.video.frame import PictureType

from orbridge.media.bitstream import h264_is_keyframe, vp8_is_keyframe

__all__ = ["VIDEO_CLOCK", "VIDEO_TIME_BASE", "Codec", "SourceStats", "VideoEncoder"]

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
Codec = Literal["VP8", "H264"]


@dataclass
class SourceStats:
    """What a packet source produced (read on the event loop; written there too)."""

    frames: int = 0
    keyframes: int = 0
    keyframes_requested: int = 0
    bytes: int = 0
    frames_skipped: int = 0
    """Frames not produced because the source fell over ``sources.MAX_LAG`` behind its clock."""
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
