"""The export's video I/O: recorded segments decoded to BGR pictures, pictures encoded to MP4.

Everything that touches PyAV/FFmpeg or resizes a picture lives here, so the pipeline
(:mod:`recording.export.exporter`) only handles numpy images and seconds. The output is libx264
(yuv420p, CRF) at the source's own timestamps in 1/90000 s, each frame lasting until the next.
"""

from __future__ import annotations

import contextlib
import fractions
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

__all__ = ["Encoder", "decode", "even", "fit", "probe"]

_TB = fractions.Fraction(1, 90000)


def even(value: int) -> int:
    """``value`` rounded up to even (yuv420p needs even sizes)."""
    return value + value % 2


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` in a ``width`` x ``height`` picture: as is, padded to even, or letterboxed."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    if w <= width and h <= height and width - w <= 1 and height - h <= 1:
        return cv2.copyMakeBorder(image, 0, height - h, 0, width - w, cv2.BORDER_CONSTANT, 0)
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((height, width, 3), np.uint8)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def _frame_rate(stream: Any) -> fractions.Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 1 <= float(rate) <= 240:
            return fractions.Fraction(rate).limit_denominator(1001)
    return None


def _bgr(frame: av.VideoFrame) -> np.ndarray:
    """A writable BGR copy of a decoded frame (OpenCV's I420 conversion is faster than
    swscale's for the usual yuv420p)."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2BGR_I420)
    return frame.to_ndarray(format="bgr24")


def decode(path: Path, warnings: list[str]) -> Iterator[tuple[np.ndarray, float, float | None]]:
    """``(BGR image, media seconds, duration)`` of every frame; a torn tail stops quietly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if frame.pts is None or frame.time is None:
                    continue
                duration = None
                if frame.duration and frame.time_base:
                    duration = float(frame.duration * frame.time_base)
                yield _bgr(frame), float(frame.time), duration
        except (av.error.InvalidDataError, av.error.EOFError) as exc:
            # An interrupted recording ends mid-cluster: keep what decoded.
            warnings.append(f"{path.name}: decoding stopped early ({exc})")


def probe(path: Path) -> tuple[int, int, fractions.Fraction | None]:
    """Width, height and frame rate (None when the file gives no plausible one)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height, _frame_rate(stream)


class Encoder:
    """libx264 into MP4; holds one frame back so each packet gets its true duration."""

    def __init__(
        self, path: Path, width: int, height: int, rate: fractions.Fraction, crf: int, preset: str
    ) -> None:
        self.container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = _TB
        self.stream.options = {"crf": str(crf), "preset": preset}
        self._held: tuple[np.ndarray, int] | None = None
        self._durations: dict[int, int] = {}
        self.frames = 0
        self.end_pts = 0
        self.default_ticks = max(1, round(90000 / float(rate)))

    def add(self, image: np.ndarray, out_s: float) -> None:
        pts = round(out_s * 90000)
        if self._held is not None:
            pts = max(pts, self._held[1] + 1)  # strictly increasing, whatever the source says
            self._encode(*self._held, pts - self._held[1])
        self._held = (image, pts)

    def _encode(self, image: np.ndarray, pts: int, ticks: int) -> None:
        frame = av.VideoFrame.from_ndarray(
            cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p"
        )
        frame.pts, frame.time_base = pts, _TB
        self._durations[pts] = ticks
        self.end_pts = pts + ticks
        self.frames += 1
        self._mux(self.stream.encode(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if packet.pts is not None:
                packet.duration = self._durations.pop(packet.pts, self.default_ticks)
            self.container.mux(packet)

    def finish(self, last_duration: float | None) -> None:
        if self._held is not None:
            ticks = round((last_duration or 0) * 90000) or self.default_ticks
            self._encode(*self._held, max(1, ticks))
            self._held = None
        self._mux(self.stream.encode(None))
        self.container.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()

    @property
    def empty(self) -> bool:
        """True while no frame was given (none encoded, none held)."""
        return self.frames == 0 and self._held is None
