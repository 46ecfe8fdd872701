"""Library thumbnails: one JPEG per recording, from its main video (OpenCV + PyAV).

Blocking (decoding, encoding, disk): call :func:`ensure_thumbnail` off the event loop. The
picture comes from about 10 % into the main video (past the first, often dark, seconds of a
laparoscopy), else its first decodable frame; a recording without video, or whose video
cannot be read yet, gets a generated placeholder, never an error.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import av
import cv2
import numpy as np

from orbridge.recording.files import replace_private
from orbridge.recording.library.store import THUMBNAIL
from orbridge.recording.manifest import Manifest, Segment, TrackEntry

logger = logging.getLogger(__name__)

__all__ = ["LIVE_MAX_AGE_S", "THUMBNAIL_WIDTH", "ensure_thumbnail", "make_thumbnail"]

THUMBNAIL_WIDTH = 320
LIVE_MAX_AGE_S = 60.0  # a recording still running gets a fresh picture at most this often
_JPEG_QUALITY = 82
_MAX_DECODED_FRAMES = 300  # frames decoded past the seek point before giving up on the target


def ensure_thumbnail(directory: Path, manifest: Manifest, *, now: float | None = None) -> Path:
    """``thumbnail.jpg`` of a recording, made if missing (or stale while recording)."""
    path = directory / THUMBNAIL
    now = time.time() if now is None else now
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        age = None
    if age is not None and not (manifest.state == "recording" and age > LIVE_MAX_AGE_S):
        return path
    data = make_thumbnail(directory, manifest)
    # Atomic replace, with a name of our own: two requests may build it at once.
    tmp = path.with_name(f".{THUMBNAIL}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        replace_private(path, data, tmp)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def make_thumbnail(directory: Path, manifest: Manifest) -> bytes:
    """JPEG bytes, ``THUMBNAIL_WIDTH`` wide."""
    track = manifest.main_video()
    image = None
    if track is not None:
        try:
            image = _grab(directory, track)
        except (av.FFmpegError, OSError, ValueError) as exc:
            logger.warning("thumbnail of %s: cannot decode %s: %s", manifest.id, track.key, exc)
    if image is None:
        image = _placeholder(manifest, "NO VIDEO" if track is None else "VIDEO NOT READABLE")
    height = max(2, round(image.shape[0] * THUMBNAIL_WIDTH / image.shape[1]))
    image = cv2.resize(image, (THUMBNAIL_WIDTH, height), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the thumbnail")
    return encoded.tobytes()


def _target(track: TrackEntry) -> tuple[Segment, float] | None:
    """The segment and the position (s) in it at 10 % of the track's media."""
    segments = [s for s in track.segments if s.started]
    if not segments:
        return None
    wanted = 0.1 * sum(s.duration or 0.0 for s in segments)
    for segment in segments:
        length = segment.duration or 0.0
        if wanted < length:
            return segment, wanted
        wanted -= length
    return segments[0], 0.0


def _grab(directory: Path, track: TrackEntry) -> np.ndarray | None:
    target = _target(track)
    if target is None:
        return None
    segment, position = target
    path = (directory / segment.file).resolve()
    if path.parent != directory.resolve() or not path.is_file():
        return None
    with av.open(str(path)) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        first: np.ndarray | None = None
        if position > 0 and stream.time_base:
            try:  # to the keyframe before the position; decode forward to it
                container.seek(int(position / stream.time_base), stream=stream, backward=True)
            except av.FFmpegError:
                container.seek(0)
        for count, frame in enumerate(container.decode(stream)):
            image = frame.to_ndarray(format="bgr24")
            if first is None:
                first = image
            if frame.time is None or frame.time >= position - 1e-3:
                return image
            if count >= _MAX_DECODED_FRAMES:
                break
        return first


def _placeholder(manifest: Manifest, label: str) -> np.ndarray:
    """A dark card with a label and the procedure (ASCII: OpenCV's fonts have no more)."""
    image = np.full((180, 320, 3), (48, 40, 32), np.uint8)
    cv2.rectangle(image, (6, 6), (313, 173), (110, 96, 80), 2)
    font = cv2.FONT_HERSHEY_SIMPLEX
    size = cv2.getTextSize(label, font, 0.8, 2)[0]
    cv2.putText(image, label, ((320 - size[0]) // 2, 80), font, 0.8, (230, 230, 230), 2,
                cv2.LINE_AA)  # fmt: skip
    caption = "".join(c if 32 <= ord(c) < 127 else "?" for c in manifest.procedure)[:34]
    if caption:
        size = cv2.getTextSize(caption, font, 0.45, 1)[0]
        cv2.putText(image, caption, (max(8, (320 - size[0]) // 2), 120), font, 0.45,
                    (200, 200, 200), 1, cv2.LINE_AA)  # fmt: skip
    return image
