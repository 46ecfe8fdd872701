"""Synthetic clips on disk: :func:`write_clip` writes the laparoscopy-like picture
(:class:`orbridge.media.sim.scene.SyntheticScene`, with its timestamp code) as WebM/VP8 or
MP4/MKV H.264, for :class:`orbridge.media.sim.sources.FileVideoTrack` and
``orbridge publish --file`` to stream later.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2

from orbridge.media.sim.encoder import Codec
from orbridge.media.sim.scene import SyntheticScene

__all__ = ["write_clip"]


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
